"""Ollama wire types <-> neutral types: names, options, request shapes, response pieces, Go templates."""

from __future__ import annotations

import math
from typing import Any

import pytest
from pydantic import ValidationError

from heylook_llm.api.embedding_vectors import shortened
from heylook_llm.api.ollama import convert, model_facts, refusals
from heylook_llm.api.ollama.go_template import render_go_template
from heylook_llm.api.ollama.schemas import ChatRequest, EmbedRequest, GenerateRequest, ModelRequest, Options
from heylook_llm.config.registry import ModelEntry, Registry, parse_registry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.engine.service import Engine
from heylook_llm.errors import InvalidRequest, ModelNotFound, UnsupportedParameter
from heylook_llm.types import ChatMessage, FinishReason, GenerationStats

pytestmark = pytest.mark.unit

SETTINGS = ServerSettings()


def _registry(*ids: str, **config: Any) -> Registry:
    models = [{"id": i, "provider": "llama_cpp", "config": {"model_path": "m.gguf", **config}} for i in ids]
    return parse_registry({"models": models}, None)


def _entry(**config: Any) -> ModelEntry:
    return _registry("m", **config).models[0]


def test_names_resolve_with_or_without_the_latest_tag() -> None:
    engine = Engine(_registry("llama", "qwen:7b"), SETTINGS)
    assert engine.resolve("llama", latest_tag=True).id == "llama"
    assert engine.resolve("llama:latest", latest_tag=True).id == "llama"
    assert engine.resolve("qwen:7b", latest_tag=True).id == "qwen:7b"
    with pytest.raises(ModelNotFound):
        engine.resolve("qwen", latest_tag=True)
    with pytest.raises(ModelNotFound):
        engine.resolve("llama:13b", latest_tag=True)
    with pytest.raises(ModelNotFound):
        engine.resolve("llama:latest")


def test_names_are_shown_with_a_tag() -> None:
    assert convert.display_name("llama") == "llama:latest"
    assert convert.display_name("qwen:7b") == "qwen:7b"
    assert convert.display_name("hf.co/org/model") == "hf.co/org/model:latest"
    assert convert.new_model_id("mario:latest") == "mario"


def test_options_map_onto_neutral_sampling() -> None:
    options = Options.model_validate(
        {
            "num_predict": 42,
            "temperature": 0.0,
            "top_k": 7,
            "top_p": 0.5,
            "min_p": 0.1,
            "repeat_penalty": 1.3,
            "repeat_last_n": 16,
            "presence_penalty": 0.2,
            "frequency_penalty": 0.3,
            "seed": 11,
            "stop": "###",
            "num_ctx": 1024,
            "mirostat": 0,
            "num_gpu": 99,
        }
    )
    sampling = convert.sampling(options)
    assert (sampling.max_tokens, sampling.temperature, sampling.top_k, sampling.top_p) == (42, 0.0, 7, 0.5)
    assert (sampling.min_p, sampling.repeat_penalty, sampling.repeat_last_n) == (0.1, 1.3, 16)
    assert (sampling.presence_penalty, sampling.frequency_penalty, sampling.seed) == (0.2, 0.3, 11)
    assert sampling.stop == ["###"]
    # Accepted without effect: mirostat off and a resource hint; nothing unknown to note.
    assert refusals.check_options(options) == []


@pytest.mark.parametrize("num_predict", [-1, -2, 0])
def test_unlimited_num_predict_fills_the_context(num_predict: int) -> None:
    assert convert.sampling(Options(num_predict=num_predict)).max_tokens == convert.UNLIMITED_TOKENS


def test_negative_seed_means_random() -> None:
    assert convert.sampling(Options(seed=-1)).seed is None


def test_request_overrides_beat_model_defaults() -> None:
    entry = _entry(temperature=0.3, top_k=5)
    body = ChatRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": "hi"}], "options": {"top_k": 9}}
    )
    gen = convert.chat_request(body, entry, SETTINGS)
    assert (gen.sampling.temperature, gen.sampling.top_k) == (0.3, 9)
    assert gen.messages == [ChatMessage("user", "hi")]


def test_bad_option_values_name_the_field() -> None:
    with pytest.raises(ValidationError) as err:
        ChatRequest.model_validate({"model": "m", "options": {"temperature": -1}})
    assert err.value.errors()[0]["loc"] == ("options", "temperature")


@pytest.mark.parametrize(
    ("value", "seconds"), [("5m", 300.0), (90, 90.0), (-1, math.inf), ("-1s", math.inf), (0, 0.0), (None, None)]
)
def test_keep_alive_is_parsed_into_seconds(value: Any, seconds: float | None) -> None:
    body = EmbedRequest.model_validate({"model": "m", "keep_alive": value})
    assert body.keep_alive == seconds


def test_bad_keep_alive_names_the_field() -> None:
    with pytest.raises(ValidationError) as err:
        GenerateRequest.model_validate({"model": "m", "keep_alive": "soon"})
    assert err.value.errors()[0]["loc"] == ("keep_alive",)


def test_older_clients_name_field_is_accepted() -> None:
    assert ModelRequest.model_validate({"name": "llama"}).model == "llama"


def test_format_json_and_schema_become_the_neutral_response_format() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    for fmt, expected in (("json", "json"), (schema, schema), ("", None), (None, None)):
        body = ChatRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}], "format": fmt})
        assert convert.chat_request(body, _entry(), SETTINGS).response_format == expected
    with pytest.raises(ValidationError):
        ChatRequest.model_validate({"model": "m", "format": "yaml"})


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"options": {"mirostat": 2}}, "options.mirostat"),
        ({"options": {"typical_p": 0.5}}, "options.typical_p"),
        ({"options": {"tfs_z": 0.9}}, "options.tfs_z"),
    ],
)
def test_unavailable_features_are_refused_not_ignored(extra: dict[str, Any], param: str) -> None:
    body = ChatRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": "x"}], **extra})
    with pytest.raises(UnsupportedParameter) as err:
        convert.chat_request(body, _entry(), SETTINGS)
    assert err.value.param == param


def test_generate_uses_the_chat_template_with_system_and_returns_context() -> None:
    body = GenerateRequest.model_validate({"model": "m", "prompt": "Why?", "system": "Be brief.", "context": [1, 2]})
    gen = convert.generate_request(body, _entry(), SETTINGS)
    assert gen.messages == [ChatMessage("system", "Be brief."), ChatMessage("user", "Why?")]
    assert gen.prompt is None and gen.context_tokens == [1, 2] and gen.return_tokens


def test_raw_generate_sends_the_prompt_as_is_without_context() -> None:
    body = GenerateRequest.model_validate({"model": "m", "prompt": "[INST] hi [/INST]", "raw": True})
    gen = convert.generate_request(body, _entry(), SETTINGS)
    assert gen.prompt == "[INST] hi [/INST]" and gen.messages is None and not gen.return_tokens


def test_suffix_makes_a_fill_in_the_middle_request() -> None:
    body = GenerateRequest.model_validate({"model": "m", "prompt": "def f(", "suffix": "    return x"})
    gen = convert.generate_request(body, _entry(), SETTINGS)
    assert (gen.prompt, gen.suffix, gen.messages) == ("def f(", "    return x", None)


def test_generate_template_is_rendered_with_the_model_system_prompt() -> None:
    entry = parse_registry(
        {"models": [{"id": "m", "provider": "llama_cpp", "system": "Sys", "config": {"model_path": "m.gguf"}}]}, None
    ).models[0]
    body = GenerateRequest.model_validate(
        {"model": "m", "prompt": "P", "template": "{{ if .System }}[{{ .System }}] {{ end }}Q: {{ .Prompt }} A:"}
    )
    assert convert.generate_request(body, entry, SETTINGS).prompt == "[Sys] Q: P A:"


@pytest.mark.parametrize(
    ("template", "values", "expected"),
    [
        ("{{ .Prompt }}", {"prompt": "p"}, "p"),
        ("{{ if .System }}S={{ .System }}{{ else }}none{{ end }}|{{ .Prompt }}", {"prompt": "p"}, "none|p"),
        ("{{ if .System }}S={{ .System }}{{ else }}none{{ end }}|{{ .Prompt }}", {"system": "s"}, "S=s|"),
        ("a  {{- .Prompt -}}  b", {"prompt": "p"}, "apb"),
        (
            "<PRE> {{ .Prompt }} <SUF>{{ .Suffix }} <MID>{{ .Response }}",
            {"prompt": "x", "suffix": "y"},
            "<PRE> x <SUF>y <MID>",
        ),
    ],
)
def test_go_template_subset_renders(template: str, values: dict[str, str], expected: str) -> None:
    assert render_go_template(template, **values) == expected


@pytest.mark.parametrize(
    "template", ["{{ range .Messages }}{{ .Content }}{{ end }}", "{{ if .System }}x", "{{ len .Prompt }}"]
)
def test_go_template_outside_the_subset_is_refused(template: str) -> None:
    with pytest.raises(InvalidRequest) as err:
        render_go_template(template, prompt="p")
    assert err.value.param == "template"


def test_final_piece_carries_nanosecond_measurements() -> None:
    stats = GenerationStats(
        prompt_tokens=12, completion_tokens=5, prompt_eval_seconds=0.25, generation_seconds=1.5, load_seconds=2.0
    )
    final = convert.generate_final("m:latest", "", FinishReason.LENGTH, stats, 4.0, [1, 2, 3])
    assert final["done"] is True and final["done_reason"] == "length" and final["context"] == [1, 2, 3]
    assert final["total_duration"] == 4_000_000_000 and final["load_duration"] == 2_000_000_000
    assert final["prompt_eval_count"] == 12 and final["prompt_eval_duration"] == 250_000_000
    assert final["eval_count"] == 5 and final["eval_duration"] == 1_500_000_000
    assert final["created_at"].endswith("Z")
    chat = convert.chat_final("m", "text", FinishReason.STOP, stats, 4.0)
    assert chat["message"] == {"role": "assistant", "content": "text"} and chat["done_reason"] == "stop"


def test_shortened_embeddings_are_unit_length() -> None:
    vectors = shortened([[3.0, 4.0, 12.0], [1.0, 0.0]], 2)
    assert vectors[0] == pytest.approx([0.6, 0.8])
    assert vectors[1] == [1.0, 0.0]
    assert shortened([[1.0, 2.0]], None) == [[1.0, 2.0]]


def test_parameters_text_lists_the_model_defaults() -> None:
    entry = _entry(temperature=0.7, stop=["<|im_end|>"], n_ctx=2048)
    lines = model_facts.parameters_text(entry).splitlines()
    assert [line.split(None, 1) for line in lines] == [
        ["num_ctx", "2048"],
        ["temperature", "0.7"],
        ["stop", '"<|im_end|>"'],
    ]


def test_null_fields_mean_not_given() -> None:
    body = GenerateRequest.model_validate(
        {"model": "m", "prompt": "x", "raw": None, "stream": None, "keep_alive": None, "options": {"mirostat": None}}
    )
    assert body.stream is True and body.raw is False and body.keep_alive is None
    assert body.options is not None and refusals.check_options(body.options) == []


def test_prompt_eval_count_is_the_whole_prompt_even_when_cached() -> None:
    stats = GenerationStats(prompt_tokens=17, cached_prompt_tokens=16, completion_tokens=3)
    measured = convert.measurements(stats, 0.5)
    assert measured["prompt_eval_count"] == 17 and measured["eval_count"] == 3


@pytest.mark.parametrize(("extra", "param"), [({"template": "{{ .Prompt }}"}, "template"), ({"system": "s"}, "system")])
def test_suffix_does_not_silently_drop_template_or_system(extra: dict[str, Any], param: str) -> None:
    body = GenerateRequest.model_validate({"model": "m", "prompt": "def f(", "suffix": "return 1", **extra})
    with pytest.raises(InvalidRequest) as err:
        convert.generate_request(body, _entry(), SETTINGS)
    assert err.value.param == param
