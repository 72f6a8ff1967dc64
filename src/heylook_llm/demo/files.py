"""File helpers shared by the demo model writers."""

from __future__ import annotations

import json
from pathlib import Path


def write_json(path: Path, data: dict[str, object]) -> None:
    """Indented, key-sorted JSON with a final newline: the same data gives the same bytes."""
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
