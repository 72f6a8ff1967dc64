"""The Jinja sandbox chat templates render in, with limits.

A chat template comes from a model file or from Ollama's /api/create, and renders on the model's worker thread:
a template that loops for ever or builds gigabytes would stall the model for everyone or abort the process.
Jinja's own sandbox blocks unsafe attributes and ranges over 100,000 items; this one also bounds, per rendering:

- the text written: every piece of output (also inside macros and `{% set %}` blocks) counts against
  `max_chars`, so rendering stops as soon as it passes the limit;
- the work: each loop iteration and each call is a step, at most MAX_STEPS (nested loops multiply);
- the amplifiers that build a large value in one step: `*`, `+`, `~` and `**`, printf and `str.format` widths,
  padding methods and filters (`center`, `ljust`, `indent`, `replace`, `join`, `batch`, ...), `tojson` indents;
- recursion: Python's recursion limit, reported like the rest.

A breach raises TemplateLimitExceeded (an InvalidRequest: HTTP 400).
"""

from __future__ import annotations

import re
import string
import threading
import types
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from jinja2 import nodes, pass_eval_context
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.filters import do_batch, do_center, do_format, do_indent, do_replace, do_tojson, sync_do_join, sync_do_slice
from jinja2.nodes import EvalContext
from jinja2.runtime import Context
from jinja2.sandbox import MAX_RANGE, ImmutableSandboxedEnvironment

from heylook_llm.errors import InvalidRequest

MAX_STEPS = 1_000_000
"""Loop iterations and calls in one rendering (a template over a 4,096-message conversation needs tens of
thousands)."""
DEFAULT_MAX_CHARS = 16 * 1024 * 1024
"""Characters a rendering may write when the caller gives no limit."""
MAX_JSON_INDENT = 64
MAX_POWER_BITS = 65_536
"""`a ** b` on integers may not produce a number wider than this (a huge power costs seconds)."""
_PADDING_METHODS = frozenset({"center", "ljust", "rjust", "zfill", "expandtabs"})
_PRINTF_SPEC = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?")


class TemplateLimitExceeded(InvalidRequest):
    """A chat template went past a rendering limit (HTTP 400)."""

    def __init__(self, message: str) -> None:
        super().__init__(f"the chat template {message}", param="messages")


class OutputLimitExceeded(TemplateLimitExceeded):
    """The rendering wrote more than its `max_chars`."""

    def __init__(self, max_chars: int) -> None:
        super().__init__(f"wrote more than {max_chars:,} characters")
        self.max_chars = max_chars


@dataclass(slots=True)
class _Budget:
    max_chars: int
    chars_left: int
    steps_left: int = MAX_STEPS


class _LimitedCodeGenerator(CodeGenerator):
    """Counts every piece of output and routes `~` through a size check."""

    def _output_const_repr(self, group: Iterable[Any]) -> str:
        return f"environment.counted_output({super()._output_const_repr(group)})"

    def _output_child_pre(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        self.write("environment.counted_output(")
        super()._output_child_pre(node, frame, finalize)

    def _output_child_post(self, node: nodes.Expr, frame: Frame, finalize: Any) -> None:
        super()._output_child_post(node, frame, finalize)
        self.write(")")

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.limited_concat((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write("))")


class LimitedSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with the limits above; render through `render()`."""

    code_generator_class = _LimitedCodeGenerator
    intercepted_binops = frozenset({"*", "+", "**", "%"})

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._local = threading.local()
        self.globals["range"] = self._range
        self.globals.pop("lipsum", None)  # writes any number of paragraphs
        self._install_filters()

    def _install_filters(self) -> None:
        # Jinja marks filters that take the evaluation context with an attribute, which a bound method cannot
        # carry: those are wrapped in functions.
        @pass_eval_context
        def join(eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
            return self._join(eval_ctx, value, d, attribute)

        @pass_eval_context
        def replace(eval_ctx: EvalContext, s: str, old: str, new: str, count: int | None = None) -> str:
            return self._replace(eval_ctx, s, old, new, count)

        @pass_eval_context
        def tojson(eval_ctx: EvalContext, value: Any, indent: int | str | None = None) -> Any:
            return self._tojson(eval_ctx, value, indent)

        self.filters.update(
            center=self._center,
            indent=self._indent,
            format=self._format,
            join=join,
            replace=replace,
            batch=self._batch,
            slice=self._slice,
            tojson=tojson,
        )

    # --- rendering -------------------------------------------------------------------------------------------
    def render(self, template: Any, max_chars: int | None, context: dict[str, Any]) -> str:
        """Render `template` (made by this environment) with a fresh budget; limits raise TemplateLimitExceeded."""
        limit = DEFAULT_MAX_CHARS if max_chars is None else max_chars
        self._local.budget = _Budget(limit, limit)
        try:
            return "".join(template.generate(**context))
        except RecursionError:
            raise TemplateLimitExceeded("nests or recurses too deeply") from None
        except MemoryError:
            raise TemplateLimitExceeded("ran out of memory") from None
        finally:
            self._local.budget = None

    def _budget(self) -> _Budget:
        budget: _Budget | None = getattr(self._local, "budget", None)
        if budget is None:  # rendered without render(): the default limits
            budget = self._local.budget = _Budget(DEFAULT_MAX_CHARS, DEFAULT_MAX_CHARS)
        return budget

    def _step(self, count: int = 1) -> None:
        budget = self._budget()
        budget.steps_left -= count
        if budget.steps_left < 0:
            raise TemplateLimitExceeded(f"took more than {MAX_STEPS:,} steps (loop iterations and calls)")

    def _check_size(self, size: int, what: str) -> None:
        limit = self._budget().max_chars
        if size > limit:
            raise TemplateLimitExceeded(f"built {what} {size:,} long, more than the {limit:,} allowed")

    # --- hooks called by compiled templates --------------------------------------------------------------------
    def counted_output(self, text: str) -> str:
        budget = self._budget()
        budget.chars_left -= len(text)
        if budget.chars_left < 0:
            raise OutputLimitExceeded(budget.max_chars)
        return text

    def limited_concat(self, parts: Iterable[Any]) -> str:
        texts = [str(p) for p in parts]
        self._check_size(sum(len(t) for t in texts), "a string")
        return "".join(texts)

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        # Every loop's iterable goes through `counted_steps`, an attribute of the environment that a template
        # cannot rebind (a global could be shadowed by `{% set %}`).
        tree = super()._parse(source, name, filename)
        for loop in tree.find_all(nodes.For):
            counted = nodes.EnvironmentAttribute("counted_steps", lineno=loop.lineno)
            loop.iter = nodes.Call(counted, [loop.iter], [], None, None, lineno=loop.lineno)
        return tree

    def counted_steps(self, iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            self._step()
            yield item

    def call(__self, __context: Context, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        # Double underscores, as in Jinja's own `call`, so that no keyword argument of the call can collide.
        __self._step()
        if isinstance(__obj, types.BuiltinMethodType) and isinstance(__obj.__self__, str):
            if __obj.__name__ == "join" and args:
                args = (list(args[0]), *args[1:])  # measured before joining, so an iterator is read once here
            __self._check_str_method(__obj.__self__, __obj.__name__, args)
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    self._check_size(len(seq) * times, "a sequence")
        elif operator == "+" and isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
            self._check_size(len(left) + len(right), "a sequence")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int) and abs(left) > 1 and right > 0:
            if right * abs(left).bit_length() > MAX_POWER_BITS:
                raise TemplateLimitExceeded(f"computed a power wider than {MAX_POWER_BITS:,} bits")
        elif operator == "%" and isinstance(left, str):
            self._check_printf(left)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Any:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            self._check_format_fields(value.__self__)
        return wrapped

    # --- amplifier checks ----------------------------------------------------------------------------------
    def _check_width(self, width: Any, what: str) -> None:
        if isinstance(width, int) and width > self._budget().max_chars:
            raise TemplateLimitExceeded(f"asked for {what} of {width:,} characters")

    def _check_str_method(self, text: str, name: str, args: tuple[Any, ...]) -> None:
        if name in _PADDING_METHODS:
            for arg in args:
                self._check_width(arg, f"str.{name} width")
            if name == "expandtabs" and args and isinstance(args[0], int):
                self._check_size(text.count("\t") * args[0] + len(text), "a string")
        elif name == "replace" and len(args) >= 2:
            self._check_replace(text, args[0], args[1])
        elif name == "join" and args:
            self._check_size(_joined_size(text, args[0]), "a string")

    def _check_replace(self, text: Any, old: Any, new: Any) -> None:
        text, old, new = str(text), str(old), str(new)
        count = len(text) + 1 if old == "" else text.count(old)
        self._check_size(len(text) + count * max(0, len(new) - len(old)), "a string")

    def _check_printf(self, fmt: str) -> None:
        for match in _PRINTF_SPEC.finditer(fmt):
            for number in match.groups():
                if number == "*":
                    raise TemplateLimitExceeded("used a '*' width in % formatting")
                if number is not None:
                    self._check_width(int(number), "a % formatting width")

    def _check_format_fields(self, fmt: str) -> None:
        try:
            fields = list(string.Formatter().parse(fmt))
        except ValueError:
            return  # str.format raises the same error when it runs
        for _, _, spec, _ in fields:
            if spec and "{" in spec:
                raise TemplateLimitExceeded("used a nested field in a str.format spec")
            for number in re.findall(r"\d+", spec or ""):
                self._check_width(int(number), "a str.format width")

    # --- filters with bounded arguments ----------------------------------------------------------------------
    def _range(self, *args: int) -> range:
        numbers = range(*args)
        if len(numbers) > MAX_RANGE:
            raise TemplateLimitExceeded(f"asked for a range of {len(numbers):,} items (at most {MAX_RANGE:,})")
        return numbers

    def _center(self, value: str, width: int = 80) -> str:
        self._check_width(width, "a centering width")
        return do_center(value, width)

    def _indent(self, s: str, width: int | str = 4, first: bool = False, blank: bool = False) -> str:
        unit = len(width) if isinstance(width, str) else width
        self._check_size(len(str(s)) + (str(s).count("\n") + 1) * unit, "an indented string")
        return do_indent(s, width, first, blank)

    def _format(self, value: str, *args: Any, **kwargs: Any) -> str:
        self._check_printf(str(value))
        return do_format(value, *args, **kwargs)

    def _join(self, eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
        items = list(value)
        self._step(len(items))
        if attribute is None:
            self._check_size(_joined_size(str(d), items), "a string")
        return sync_do_join(eval_ctx, items, d, attribute)

    def _replace(self, eval_ctx: EvalContext, s: str, old: str, new: str, count: int | None = None) -> str:
        self._check_replace(s, old, new)
        return do_replace(eval_ctx, s, old, new, count)

    def _batch(self, value: Iterable[Any], linecount: int, fill_with: Any = None) -> Any:
        self._check_width(linecount, "batches")
        return do_batch(value, linecount, fill_with)

    def _slice(self, value: Collection[Any], slices: int, fill_with: Any = None) -> Any:
        if slices > MAX_RANGE:
            raise TemplateLimitExceeded(f"asked for {slices:,} slices (at most {MAX_RANGE:,})")
        return sync_do_slice(value, slices, fill_with)

    def _tojson(self, eval_ctx: EvalContext, value: Any, indent: int | str | None = None) -> Any:
        width = len(indent) if isinstance(indent, str) else indent
        if width is not None and width > MAX_JSON_INDENT:
            raise TemplateLimitExceeded(f"asked for a tojson indent of {width:,} (at most {MAX_JSON_INDENT})")
        return do_tojson(eval_ctx, value, indent)  # type: ignore[arg-type]


def _joined_size(separator: str, items: list[Any]) -> int:
    """Characters `separator.join(items)` would write (items that are not strings count as their str())."""
    return sum(len(i) if isinstance(i, str) else len(str(i)) for i in items) + len(separator) * max(0, len(items) - 1)
