"""Reasoning formats: how a model family marks the reasoning it writes before its answer, how to close that
section when a budget is spent, and what its chat template takes to turn reasoning off or set its effort.

`think` covers `<think>...</think>` (DeepSeek-R1 and its distills, Qwen3, QwQ, GLM and many fine-tunes);
`harmony` covers gpt-oss, whose reasoning is a message on the analysis channel. Detected from the chat template,
or named by `reasoning_format` in models.yaml.
"""

from __future__ import annotations

from dataclasses import dataclass

HARMONY_ANALYSIS = "<|channel|>analysis<|message|>"
HARMONY_END = "<|end|>"
HARMONY_FINAL = "<|start|>assistant<|channel|>final<|message|>"


@dataclass(frozen=True, slots=True)
class ReasoningFormat:
    name: str
    start: str
    """Opens the reasoning section (written by the model, or at the end of the prompt by its template)."""
    end: str
    """Ends the reasoning section."""
    close: str
    """Written by the server when the budget is spent: `end`, plus the header the answer needs after it."""
    description: str

    def detects(self, template: str) -> bool:
        return self.start in template or self.end in template


THINK = ReasoningFormat(
    name="think",
    start="<think>",
    end="</think>",
    close="</think>",
    description="<think>...</think> before the answer (DeepSeek-R1, Qwen3, QwQ and many fine-tunes)",
)
HARMONY = ReasoningFormat(
    name="harmony",
    start=HARMONY_ANALYSIS,
    end=HARMONY_END,
    close=HARMONY_END + HARMONY_FINAL,
    description="Harmony's analysis channel before the final message (gpt-oss)",
)

FORMATS: dict[str, ReasoningFormat] = {f.name: f for f in (HARMONY, THINK)}
"""Every format by its `reasoning_format` name (models.yaml); `none` turns detection off."""


def detect_reasoning_format(template: str | None) -> ReasoningFormat | None:
    """The format a chat template shows (Harmony first: its templates may mention think tags too); None when it
    shows none."""
    if not template:
        return None
    if "<|channel|>" in template and "analysis" in template:
        return HARMONY
    if THINK.detects(template):
        return THINK
    return None


EFFORT_LEVELS = ("low", "medium", "high")
"""Effort levels templates take (gpt-oss's `reasoning_effort`); other requested levels map to the nearest."""

_NEAREST = {"minimal": "low", "xhigh": "high", "max": "high"}


def template_effort(effort: str) -> str:
    """A requested effort as a template level ("minimal" -> "low", "xhigh" -> "high")."""
    return _NEAREST.get(effort, effort)
