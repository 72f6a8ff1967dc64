"""`heylookllm import` and `heylookllm models` as a user runs them, then a real server on the imported file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from openai import OpenAI

from heylook_llm.config.registry import LlamaCppConfig, MLXConfig, load_registry, parse_registry
from heylook_llm.demo import (
    EOS_TOKEN,
    ModelShape,
    random_weights,
    train_tokenizer,
    write_llama_gguf,
    write_random_mlx_model,
    write_vision_projector_gguf,
)
from tests.conftest import start_server
from tests.support.import_fixtures import (
    FakeHfCache,
    split_gguf,
    write_gguf,
    write_projector,
    write_transformers_checkpoint,
)

pytestmark = pytest.mark.integration

EXPECTED_IDS = {
    "chat",
    "embed",
    "tiny-split",
    "tiny-vision",
    "mlx-community/demo-mlx",
    "org/tiny-GGUF:F16",
    "org/tiny-GGUF:F32",
}


def _run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "heylook_llm", *args], capture_output=True, text=True, timeout=300, cwd=cwd
    )


@pytest.fixture(scope="module")
def library(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of GGUF files (with a split model, a projector, a symlink, a checkpoint to skip, a text file)
    and a Hugging Face cache (MLX repo, a GGUF repo with two quantizations and a projector)."""
    root = tmp_path_factory.mktemp("library")
    gguf_dir = root / "gguf"
    gguf_dir.mkdir()
    shutil.copy(demo_dir / "demo-gguf.gguf", gguf_dir / "chat.gguf")
    shutil.copy(demo_dir / "demo-embed-gguf.gguf", gguf_dir / "embed.gguf")
    (gguf_dir / "chat-link.gguf").symlink_to(gguf_dir / "chat.gguf")
    (gguf_dir / "README.txt").write_text("my models")
    split_gguf(demo_dir / "demo-gguf.gguf", gguf_dir / "split" / "tiny-split-00001-of-00002.gguf", 2)
    write_gguf(gguf_dir / "vision" / "tiny-vision.gguf", width=64)
    write_projector(gguf_dir / "vision" / "mmproj-tiny-vision-f16.gguf", projection_dim=64)
    write_transformers_checkpoint(gguf_dir / "hf-checkpoint")

    shape = ModelShape()
    tokenizer = train_tokenizer(shape.vocab)
    eos = tokenizer.token_id(EOS_TOKEN)
    sources = root / "sources"
    sources.mkdir()
    for name, seed, f16 in (("tiny-F16.gguf", 0, True), ("tiny-F32.gguf", 7, False)):
        weights = random_weights(shape, len(tokenizer.tokens), seed=seed, eos_id=eos)
        write_llama_gguf(sources / name, shape, weights, tokenizer, name=name, f16=f16)
    # A projector llama.cpp really loads: the imported model is served with it below.
    write_vision_projector_gguf(sources / "mmproj-tiny-f16.gguf", text_hidden=shape.hidden)
    cache = FakeHfCache(root / "hub")
    cache.add_repo("org/tiny-GGUF", {p.name: p for p in sorted(sources.iterdir())})
    cache.add_folder("mlx-community/demo-mlx", demo_dir / "demo-mlx")
    return root


def _import(library: Path, out: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _run(
        "import", "--folder", str(library / "gguf"), "--hf-cache", str(library / "hub"), "--output", str(out), *extra
    )


@pytest.fixture(scope="module")
def imported(library: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("imported") / "models.yaml"
    result = _import(library, out, "--profile", "fast")
    assert result.returncode == 0, result.stderr
    return out, result.stdout


def test_help_for_every_new_command() -> None:
    for command in (["import"], ["models"], ["models", "list"], ["models", "validate"]):
        result = _run(*command, "--help")
        assert result.returncode == 0, result.stderr
        assert f"usage: heylookllm {' '.join(command)}" in result.stdout
    assert "precedence" in _run("import", "--help").stdout


def test_import_finds_every_model_once_and_reports(imported: tuple[Path, str]) -> None:
    out, stdout = imported
    registry = load_registry(out)
    assert {m.id for m in registry.models} == EXPECTED_IDS
    entries = {m.id: m for m in registry.models}
    split = entries["tiny-split"].config
    assert isinstance(split, LlamaCppConfig) and split.model_path.name == "tiny-split-00001-of-00002.gguf"
    for vision_id in ("tiny-vision", "org/tiny-GGUF:F16", "org/tiny-GGUF:F32"):
        config = entries[vision_id].config
        assert isinstance(config, LlamaCppConfig) and config.mmproj_path is not None
    embed = entries["embed"].config
    assert isinstance(embed, LlamaCppConfig) and embed.embedding
    assert isinstance(entries["mlx-community/demo-mlx"].config, MLXConfig)
    for text in (
        "Imported 7 model(s) with profile fast",
        "Skipped",
        "chat-link.gguf",
        "symlink",
        "hf-checkpoint",
        "transformers checkpoint",
        "memory (weights + KV @ tokens)",
    ):
        assert text in stdout, text
    assert "README.txt" not in stdout and "mmproj-tiny-f16.gguf" not in stdout.split("Skipped")[0]


def test_an_imported_file_is_served(imported: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = imported
    server = start_server(tmp_path, out)
    try:
        client = OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=120)
        served = {m.id for m in client.models.list().data}
        assert served >= EXPECTED_IDS
        for model in ("chat", "tiny-split", "org/tiny-GGUF:F16", "mlx-community/demo-mlx"):
            reply = client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hello"}], temperature=0
            )
            # no max_tokens in the request: the fast profile's max_tokens (256) applies, and the demo
            # weights never end early under greedy decoding
            assert reply.usage is not None and reply.usage.completion_tokens == 256, model
            assert reply.choices[0].finish_reason == "length"
        vectors = client.embeddings.create(model="embed", input=["one", "two"])
        assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 64
    finally:
        server.stop()


def test_profile_and_override_reach_the_file(library: Path, tmp_path: Path) -> None:
    out = tmp_path / "models.yaml"
    result = _import(
        library, out, "--profile", "interactive", "--override", "temperature=0.25", "--override", "n_ctx=1024"
    )
    assert result.returncode == 0, result.stderr
    entries = {m.id: m.config for m in load_registry(out).models}
    chat, mlx = entries["chat"], entries["mlx-community/demo-mlx"]
    assert isinstance(chat, LlamaCppConfig) and isinstance(mlx, MLXConfig)
    assert (chat.n_ctx, chat.parallel, chat.temperature, chat.max_tokens, chat.repeat_penalty) == (
        1024,
        1,
        0.25,
        512,
        1.1,
    )
    assert (mlx.cache_type, mlx.max_kv_size, mlx.temperature, mlx.repetition_penalty) == ("rotating", 2048, 0.25, 1.1)


def test_dry_run_writes_nothing_and_prints_the_file(library: Path, tmp_path: Path) -> None:
    out = tmp_path / "models.yaml"
    result = _import(library, out, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert not out.exists() and list(tmp_path.iterdir()) == []
    registry = parse_registry(yaml.safe_load(result.stdout), out)  # stdout is the YAML alone
    assert {m.id for m in registry.models} == EXPECTED_IDS
    assert "dry run" in result.stderr and "Imported 7 model(s)" in result.stderr


def test_existing_output_needs_merge_or_force(library: Path, tmp_path: Path) -> None:
    out = tmp_path / "models.yaml"
    out.write_text("models: []\n")
    result = _import(library, out)
    assert result.returncode == 2 and "--merge" in result.stderr
    assert out.read_text() == "models: []\n"
    forced = _import(library, out, "--force")
    assert forced.returncode == 0, forced.stderr
    assert len(list(tmp_path.glob("models.yaml.*.bak"))) == 1


def test_merge_twice_keeps_comments_replaces_and_gives_the_same_file(library: Path, tmp_path: Path) -> None:
    out = tmp_path / "models.yaml"
    (tmp_path / "my-chat.gguf").symlink_to(library / "gguf" / "chat.gguf")
    original = (
        "# my own file\nmodels:\n  # mine\n  - id: favourite\n    provider: llama_cpp\n"
        "    config:\n      model_path: my-chat.gguf  # via a link\n      n_ctx: 64\n"
    )
    out.write_text(original)
    first = _import(library, out, "--merge")
    assert first.returncode == 0, first.stderr
    text = out.read_text()
    assert "# my own file" in text and "# mine" in text and "# via a link" in text
    ids = [m.id for m in load_registry(out).models]
    assert ids[0] == "favourite" and "chat" not in ids and len(ids) == len(EXPECTED_IDS)
    assert "6 added, 1 replaced" in first.stdout
    second = _import(library, out, "--merge")
    assert second.returncode == 0, second.stderr
    assert out.read_text() == text and "nothing written" in second.stderr
    backups = list(tmp_path.glob("models.yaml.*.bak"))
    assert len(backups) == 1 and backups[0].read_text() == original


def test_bad_overrides_exit_2_naming_the_nearest_key(library: Path, tmp_path: Path) -> None:
    out = tmp_path / "models.yaml"
    result = _import(library, out, "--override", "temprature=0.3", "--override", "n_ctx=big")
    assert result.returncode == 2
    assert "did you mean 'temperature'" in result.stderr and "n_ctx=big" in result.stderr
    combo = _import(library, out, "--override", "max_kv_size=10")
    assert combo.returncode == 2
    assert "model 'mlx-community/demo-mlx'" in combo.stderr and "max_kv_size=10" in combo.stderr
    assert not out.exists()


def test_memory_warning_when_the_largest_models_do_not_fit(library: Path, tmp_path: Path) -> None:
    result = _import(library, tmp_path / "m.yaml", "--override", "n_ctx=100000000", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "warning: the 2 largest models" in result.stderr and "max_loaded_models" in result.stderr


def test_usage_errors(tmp_path: Path) -> None:
    nothing = _run("import", "--output", str(tmp_path / "m.yaml"))
    assert nothing.returncode == 2 and "--folder" in nothing.stderr
    missing = _run("import", "--folder", str(tmp_path / "absent"))
    assert missing.returncode == 2 and "not a folder" in missing.stderr
    (tmp_path / "empty").mkdir()
    empty = _run("import", "--folder", str(tmp_path / "empty"), "--output", str(tmp_path / "m.yaml"))
    assert empty.returncode == 1 and "no models found" in empty.stderr
    no_cache = _run("import", "--hf-cache", str(tmp_path / "no-cache"), "--output", str(tmp_path / "m.yaml"))
    assert no_cache.returncode == 2 and "no Hugging Face cache" in no_cache.stderr
    assert not (tmp_path / "m.yaml").exists()
    assert _run("models").returncode == 2


def test_models_list_and_validate(imported: tuple[Path, str], tmp_path: Path) -> None:
    out, _ = imported
    listing = _run("models", "list", "--config", str(out))
    assert listing.returncode == 0, listing.stderr
    for text in ("org/tiny-GGUF:F16", "embedding", "completion, vision", "yes", "mlx"):
        assert text in listing.stdout
    valid = _run("models", "validate", str(out))
    assert valid.returncode == 0 and "valid (7 model(s), 7 enabled)" in valid.stdout
    broken = tmp_path / "models.yaml"
    text = out.read_text().replace("n_ctx: 2048", "n_cxt: 2048", 1)
    vision = next(m for m in load_registry(out).models if m.id == "tiny-vision").config.model_path
    broken.write_text(text.replace(f"model_path: {vision}", "model_path: /no/such/tiny-vision.gguf"))
    bad = _run("models", "validate", str(broken))
    assert bad.returncode == 1
    assert "did you mean 'n_ctx'" in bad.stderr and "field 'config.n_cxt'" in bad.stderr
    assert "model 'tiny-vision': field 'config.model_path': /no/such/tiny-vision.gguf does not exist" in bad.stderr
    assert "2 problem(s)" in bad.stderr
    # the default location: ./models.yaml
    in_cwd = _run("models", "validate", cwd=out.parent)
    assert in_cwd.returncode == 0, in_cwd.stderr


def test_memory_profile_serves_mlx_with_a_quantized_kv_cache(tmp_path: Path) -> None:
    shape = ModelShape(hidden=128, heads=2, kv_heads=1, ffn=256)  # 64-wide heads: MLX can quantize them
    write_random_mlx_model(tmp_path / "models" / "wide-heads", shape, train_tokenizer(shape.vocab), seed=3)
    out = tmp_path / "models.yaml"
    result = _run("import", "--folder", str(tmp_path / "models"), "--profile", "memory", "--output", str(out))
    assert result.returncode == 0, result.stderr
    (entry,) = load_registry(out).models
    assert isinstance(entry.config, MLXConfig)
    assert (entry.config.cache_type, entry.config.kv_bits, entry.config.kv_group_size) == ("quantized", 4, 64)
    server = start_server(tmp_path, out)
    try:
        client = OpenAI(base_url=f"{server.base_url}/v1", api_key="x", max_retries=0, timeout=120)
        reply = client.chat.completions.create(
            model="wide-heads", messages=[{"role": "user", "content": "hello"}], temperature=0
        )
        assert reply.usage is not None and reply.usage.completion_tokens == 512  # the memory profile's max_tokens
    finally:
        server.stop()
