"""The tool-call formats by name, and detection from a chat template."""

from __future__ import annotations

from heylook_llm.engine.tool_calls.base import ToolFormat
from heylook_llm.engine.tool_calls.deepseek import DeepSeekFormat, DeepSeekV31Format
from heylook_llm.engine.tool_calls.generic import GenericFormat
from heylook_llm.engine.tool_calls.harmony import HarmonyFormat
from heylook_llm.engine.tool_calls.hermes import HermesFormat
from heylook_llm.engine.tool_calls.llama3 import Llama3Format
from heylook_llm.engine.tool_calls.mistral import MistralArgsFormat, MistralFormat

FORMATS: dict[str, ToolFormat] = {
    f.name: f
    for f in (
        HarmonyFormat(),
        DeepSeekFormat(),
        DeepSeekV31Format(),
        MistralArgsFormat(),
        MistralFormat(),
        Llama3Format(),
        HermesFormat(),
        GenericFormat(),
    )
}
"""Every format by its `tool_format` name (models.yaml)."""

DETECTION_ORDER = ("harmony", "deepseek", "deepseek_v3_1", "mistral_args", "mistral", "llama3", "hermes")
"""Tried in this order on a chat template (more specific markers first); `generic` when none matches."""


def detect_format(template: str | None) -> ToolFormat:
    """The format a chat template uses; the generic one (tools in a system message) when it shows none."""
    for name in DETECTION_ORDER:
        if template and FORMATS[name].detects(template):
            return FORMATS[name]
    return FORMATS["generic"]
