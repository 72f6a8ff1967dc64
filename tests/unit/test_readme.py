"""The README says what a new user gets: its demo-model list matches what `demo-models` writes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from heylook_llm.demo import _models_yaml

pytestmark = pytest.mark.unit

README = Path(__file__).resolve().parents[2] / "README.md"
COUNTS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight", 9: "nine", 10: "ten"}


def test_readme_names_every_demo_model_and_their_number() -> None:
    written = [model["id"] for model in yaml.safe_load(_models_yaml())["models"]]
    paragraph = next(line for line in README.read_text().split("\n- ") if line.startswith("`demo-models` writes"))
    named = re.findall(r"`(demo-[a-z-]+)`", paragraph)
    assert sorted(set(named) - {"demo-models"}) == sorted(written)
    assert f"writes {COUNTS[len(written)]} tiny" in paragraph


def test_readme_names_the_packaged_models_the_first_run_serves() -> None:
    from heylook_llm.packaged_models import KNOWN_PACKAGED_MODELS

    text = README.read_text()
    first_command = text.split("```bash", 1)[0]
    serve = next(line for line in text.split("\n- ") if line.startswith("`serve` is the default command"))
    for model in KNOWN_PACKAGED_MODELS:
        assert f"`{model.model_id}`" in first_command
        assert f"`{model.model_id}`" in serve and f"`{model.model_id}-mlx`" in serve
