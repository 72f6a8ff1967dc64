"""The small part of Go's text/template that /api/generate's `template` field uses in practice.

Understood: `{{ .System }}`, `{{ .Prompt }}`, `{{ .Suffix }}`, `{{ .Response }}` (always empty here),
`{{ if .X }}`, `{{ else }}`, `{{ end }}`, and the `{{-` / `-}}` whitespace trims. Anything else (`range`,
`.Messages`, functions) is refused by name rather than rendered wrongly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from heylook_llm.errors import InvalidRequest

_ACTION = re.compile(r"\{\{(-?)\s*(.*?)\s*(-?)\}\}", re.DOTALL)
_VARIABLES = ("System", "Prompt", "Suffix", "Response")


@dataclass(slots=True)
class _Var:
    name: str


@dataclass(slots=True)
class _Block:
    condition: str | None
    """Variable name for an `if` block; None for the top level."""
    then: list[str | _Var | _Block] = field(default_factory=list)
    otherwise: list[str | _Var | _Block] = field(default_factory=list)
    in_else: bool = False

    def add(self, node: str | _Var | _Block) -> None:
        (self.otherwise if self.in_else else self.then).append(node)


def _variable(expression: str) -> str:
    name = expression.removeprefix(".")
    if not expression.startswith(".") or name not in _VARIABLES:
        raise InvalidRequest(
            f"template: '{{{{ {expression} }}}}' is not supported (only .System, .Prompt, .Suffix, .Response "
            "and if/else/end on them); send raw: true with the prompt already formatted instead",
            param="template",
        )
    return name


def _parse(template: str) -> _Block:
    root = _Block(None)
    stack = [root]
    position = 0
    pieces: list[str | tuple[str, bool, bool]] = []
    for match in _ACTION.finditer(template):
        pieces.append(template[position : match.start()])
        pieces.append((match.group(2), bool(match.group(1)), bool(match.group(3))))
        position = match.end()
    pieces.append(template[position:])
    # Apply the trim markers to the neighbouring text first, as Go does.
    for index, piece in enumerate(pieces):
        if isinstance(piece, tuple):
            _, trim_left, trim_right = piece
            if trim_left and isinstance(pieces[index - 1], str):
                pieces[index - 1] = str(pieces[index - 1]).rstrip()
            if trim_right and index + 1 < len(pieces) and isinstance(pieces[index + 1], str):
                pieces[index + 1] = str(pieces[index + 1]).lstrip()
    for piece in pieces:
        if isinstance(piece, str):
            if piece:
                stack[-1].add(piece)
            continue
        expression = piece[0]
        words = expression.split()
        if words and words[0] == "if" and len(words) == 2:
            block = _Block(_variable(words[1]))
            stack[-1].add(block)
            stack.append(block)
        elif expression == "else" and len(stack) > 1 and not stack[-1].in_else:
            stack[-1].in_else = True
        elif expression == "end" and len(stack) > 1:
            stack.pop()
        else:
            stack[-1].add(_Var(_variable(expression)))
    if len(stack) != 1:
        raise InvalidRequest("template: an {{ if }} has no {{ end }}", param="template")
    return root


def _render(nodes: list[str | _Var | _Block], values: dict[str, str], out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif isinstance(node, _Var):
            out.append(values[node.name])
        else:
            _render(node.then if values.get(node.condition or "") else node.otherwise, values, out)


def render_go_template(template: str, *, system: str = "", prompt: str = "", suffix: str = "") -> str:
    """Render the supported subset; raises InvalidRequest (param "template") on anything else."""
    root = _parse(template)
    out: list[str] = []
    _render(root.then, {"System": system, "Prompt": prompt, "Suffix": suffix, "Response": ""}, out)
    return "".join(out)
