"""The small part of Go's text/template that /api/generate's `template` field uses in practice.

Understood: `{{ .System }}`, `{{ .Prompt }}`, `{{ .Suffix }}`, `{{ .Response }}` (always empty here),
`{{ if .X }}`, `{{ else }}`, `{{ end }}`, and the `{{-` / `-}}` whitespace trims. Anything else (`range`,
`.Messages`, functions) is refused by name rather than rendered wrongly.

Limits (a breach is a 400 naming `template`): `{{ if }}` blocks nest at most MAX_NESTING deep, and the output
stops at the caller's `max_chars` (a template that repeats the prompt thousands of times would otherwise build
gigabytes). Parsing is linear in the template's length.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from heylook_llm.errors import InvalidRequest

_VARIABLES = ("System", "Prompt", "Suffix", "Response")
MAX_NESTING = 64
DEFAULT_MAX_CHARS = 16 * 1024 * 1024


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


def _split(template: str) -> list[str | tuple[str, bool, bool]]:
    """Text and actions (expression, trim left, trim right), found with `str.find` so that the time is linear
    in the template's length (a backtracking regex is quadratic on many unclosed `{{`)."""
    pieces: list[str | tuple[str, bool, bool]] = []
    position = 0
    while (start := template.find("{{", position)) != -1:
        end = template.find("}}", start + 2)
        if end == -1:
            raise InvalidRequest("template: a '{{' has no closing '}}'", param="template")
        inner = template[start + 2 : end]
        trim_left = inner.startswith("-")
        inner = inner[1:] if trim_left else inner
        trim_right = inner.endswith("-")
        inner = inner[:-1] if trim_right else inner
        pieces.append(template[position:start])
        pieces.append((inner.strip(), trim_left, trim_right))
        position = end + 2
    pieces.append(template[position:])
    return pieces


def _parse(template: str) -> _Block:
    root = _Block(None)
    stack = [root]
    pieces = _split(template)
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
            if len(stack) > MAX_NESTING:
                raise InvalidRequest(f"template: {{{{ if }}}} blocks nest deeper than {MAX_NESTING}", param="template")
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


@dataclass(slots=True)
class _Output:
    max_chars: int
    parts: list[str] = field(default_factory=list)
    size: int = 0

    def write(self, text: str) -> None:
        self.size += len(text)
        if self.size > self.max_chars:
            raise InvalidRequest(f"template: the output passed {self.max_chars:,} characters", param="template")
        self.parts.append(text)


def _render(nodes: list[str | _Var | _Block], values: dict[str, str], out: _Output) -> None:
    for node in nodes:
        if isinstance(node, str):
            out.write(node)
        elif isinstance(node, _Var):
            out.write(values[node.name])
        else:
            _render(node.then if values.get(node.condition or "") else node.otherwise, values, out)


def render_go_template(
    template: str, *, system: str = "", prompt: str = "", suffix: str = "", max_chars: int = DEFAULT_MAX_CHARS
) -> str:
    """Render the supported subset; raises InvalidRequest (param "template") on anything else, and when the
    output would pass `max_chars`."""
    root = _parse(template)
    out = _Output(max_chars)
    _render(root.then, {"System": system, "Prompt": prompt, "Suffix": suffix, "Response": ""}, out)
    return "".join(out.parts)
