"""The README says what a new user gets: its demo-model list matches what `demo-models` writes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from heylook_llm.demo import _models_yaml

pytestmark = pytest.mark.unit

README = Path(__file__).resolve().parents[2] / "README.md"
COUNTS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine"}


def test_readme_names_every_demo_model_and_their_number() -> None:
    written = [model["id"] for model in yaml.safe_load(_models_yaml())["models"]]
    paragraph = next(line for line in README.read_text().split("\n- ") if line.startswith("`demo-models` writes"))
    named = re.findall(r"`(demo-[a-z-]+)`", paragraph)
    assert sorted(set(named) - {"demo-models"}) == sorted(written)
    assert f"writes {COUNTS[len(written)]} tiny" in paragraph
