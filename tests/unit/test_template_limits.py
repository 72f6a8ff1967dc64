"""Chat templates (Jinja, backends/template_sandbox.py) and Ollama's Go templates render with limits on output,
work and nesting; a breach is a 400 (InvalidRequest), never a hang, a crash or a 500."""

from __future__ import annotations

import time

import pytest

from heylook_llm.api.ollama.go_template import MAX_NESTING, render_go_template
from heylook_llm.backends.chat_template import ChatTemplate
from heylook_llm.backends.template_sandbox import MAX_STEPS, LimitedSandbox, TemplateLimitExceeded
from heylook_llm.backends.tokens import PromptLimit
from heylook_llm.config.chat_formats import CHAT_FORMATS
from heylook_llm.errors import InvalidRequest, PromptTooLong
from heylook_llm.types import ChatMessage

pytestmark = pytest.mark.unit

MESSAGES = [ChatMessage("system", "Be brief."), ChatMessage("user", "hi\nthere"), ChatMessage("assistant", "ok")]


def _render(source: str, max_chars: int = 100_000) -> str:
    env = LimitedSandbox(trim_blocks=True, lstrip_blocks=True)
    return env.render(env.from_string(source), max_chars, {"messages": [{"role": "user", "content": "hi"}]})


@pytest.mark.parametrize("name", sorted(CHAT_FORMATS))
def test_real_templates_render_as_in_jinjas_own_sandbox(name: str) -> None:
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    plain = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True).from_string(CHAT_FORMATS[name])
    expected = plain.render(
        messages=[{"role": m.role, "content": m.content} for m in MESSAGES],
        bos_token="<s>",
        eos_token="</s>",
        add_generation_prompt=True,
    )
    assert ChatTemplate(CHAT_FORMATS[name], bos_token="<s>", eos_token="</s>").render(MESSAGES) == expected


@pytest.mark.parametrize(
    ("source", "words"),
    [
        ("{{ range(10**9)|list|length }}", "range of 1,000,000,000"),
        ("{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "steps"),
        ("{% macro f(n) %}{% if n %}{{ f(n-1) }}{{ f(n-1) }}{% endif %}{% endmacro %}{{ f(40) }}", "steps"),
        ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "recurses"),
        ("{{ 'a' * 10**9 }}", "built a sequence"),
        ("{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "string"),
        ("{% set ns = namespace(s='ab') %}{% for i in range(60) %}{% set ns.s = ns.s + ns.s %}{% endfor %}", "built"),
        ("{{ 2 ** (10 ** 8) }}", "power"),
        ("{{ 'x'|center(10**9) }}", "centering width"),
        ("{{ '%0999999999d'|format(1) }}", "% formatting width"),
        ("{{ '%0999999999d' % 1 }}", "% formatting width"),
        ("{{ '{:>999999999}'.format(1) }}", "str.format width"),
        ("{{ 'x'.ljust(10**9) }}", "str.ljust width"),
        ("{{ ('a' * 1000).replace('', 'b' * 1000) }}", "built a string"),
        ("{{ range(100000)|map('string')|join('b' * 10000) }}", "built a string"),
        ("{{ ('b' * 10000).join(range(100000)|map('string')) }}", "built a string"),
        ("{{ messages|tojson(indent=100000) }}", "tojson indent"),
        ("{{ [1, 2]|batch(10**9, 'x')|list }}", "batches"),
        ("{{ messages[0].content|indent(10**8) }}", "indented string"),
        ("{% for i in range(100000) %}{{ messages[0].content }}{% endfor %}", "wrote more than 100,000"),
        ("{% set x %}{% for i in range(100000) %}{{ 'a' * 60 }}{% endfor %}{% endset %}", "wrote more than"),
    ],
)
def test_template_bombs_stop_with_a_limit_error(source: str, words: str) -> None:
    started = time.perf_counter()
    with pytest.raises(TemplateLimitExceeded) as err:
        _render(source)
    assert words in err.value.message and err.value.param == "messages"
    assert time.perf_counter() - started < 20


def test_lipsum_is_gone_and_ordinary_template_code_still_works() -> None:
    with pytest.raises(Exception, match="lipsum"):
        _render("{{ lipsum(1000) }}")
    text = _render(
        "{% for m in messages %}{{ m.role|upper }}: {{ m.content|trim }}{{ '-' * 3 }}{{ [1, 2]|join(',') }}"
        "{{ '%s!'|format('x') }}{{ '{}?'.format('y') }}{{ 'a b'.split()|length }}{% endfor %}"
    )
    assert text == "USER: hi---1,2x!y?2"
    assert MAX_STEPS >= 100_000


def test_chat_template_errors_are_400_not_500() -> None:
    broken = ChatTemplate("{{ 1 / 0 }}")
    with pytest.raises(InvalidRequest) as err:
        broken.render(MESSAGES)
    assert "division by zero" in err.value.message and err.value.param == "messages"
    with pytest.raises(TemplateLimitExceeded):
        ChatTemplate("{% for i in range(10**9) %}{% endfor %}").render(MESSAGES)


def test_a_rendering_past_the_prompt_limit_is_prompt_too_long() -> None:
    template = ChatTemplate(CHAT_FORMATS["chatml"])
    limit = PromptLimit(context_length=100, bytes_per_token=16)
    assert template.render(MESSAGES, limit=limit).startswith("<|im_start|>system")
    with pytest.raises(PromptTooLong) as err:
        template.render([ChatMessage("user", "x" * 5000)], limit=limit)
    assert err.value.context_length == 100 and "1,600 bytes" in err.value.message
    assert "--prompt-bytes-per-token" in err.value.message


def test_prompt_limit_measures_utf8_bytes_without_encoding_short_text() -> None:
    limit = PromptLimit(context_length=10, bytes_per_token=4)  # 40 bytes
    limit.check("x" * 10)
    limit.check("é" * 20)  # 40 bytes
    with pytest.raises(PromptTooLong) as err:
        limit.check("é" * 21)
    assert "42 bytes" in err.value.message
    with pytest.raises(PromptTooLong):
        limit.check("x" * 30, "y" * 11)
    limit.check("\ud800" * 10)  # a lone surrogate from JSON is measured, not an error here


# --- Ollama's Go templates ------------------------------------------------------------------------------------------
def test_go_template_nesting_is_bounded() -> None:
    deep = "{{ if .System }}" * 10_000 + "x" + "{{ end }}" * 10_000
    with pytest.raises(InvalidRequest) as err:
        render_go_template(deep, system="s")
    assert f"deeper than {MAX_NESTING}" in err.value.message and err.value.param == "template"
    fine = "{{ if .Prompt }}" * MAX_NESTING + "x" + "{{ end }}" * MAX_NESTING
    assert render_go_template(fine, prompt="p") == "x"


def test_go_template_output_is_bounded() -> None:
    with pytest.raises(InvalidRequest) as err:
        render_go_template("{{ .Prompt }}" * 100_000, prompt="p" * 1000, max_chars=1_000_000)
    assert "passed 1,000,000 characters" in err.value.message


def test_go_template_parsing_is_linear_and_refuses_unclosed_actions() -> None:
    started = time.perf_counter()
    with pytest.raises(InvalidRequest, match="no closing"):
        render_go_template("{{" * 500_000)
    assert render_go_template("a {{- .Prompt -}} b {{-.Suffix-}}!", prompt="p", suffix="s") == "apbs!"
    assert time.perf_counter() - started < 5
