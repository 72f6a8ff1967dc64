"""/api/generate with a suffix on a model that has fill-in-the-middle tokens.

The demo GGUF has none, so the test writes a copy that declares three of its tokens as prefix/suffix/middle.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import gguf
import pytest
import yaml
from ollama import Client
from tokenizers import Tokenizer

from tests.conftest import start_server
from tests.support.server import ServerProcess

pytestmark = pytest.mark.integration

FIM_IDS = (100, 101, 102)


def _with_fim_tokens(source: Path, target: Path) -> None:
    reader = gguf.GGUFReader(str(source))
    writer = gguf.GGUFWriter(str(target), str(reader.fields["general.architecture"].contents()))
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        sub_type = field.types[1] if len(field.types) > 1 else None
        writer.add_key_value(name, field.contents(), field.types[0], sub_type=sub_type)
    for key, token in zip(("fim_pre", "fim_suf", "fim_mid"), FIM_IDS, strict=True):
        writer.add_uint32(f"tokenizer.ggml.{key}_token_id", token)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, tensor.data, raw_dtype=tensor.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@pytest.fixture(scope="module")
def fim_server(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    folder = tmp_path_factory.mktemp("fim")
    _with_fim_tokens(demo_dir / "demo-gguf.gguf", folder / "fim.gguf")
    models = [{"id": "coder", "provider": "llama_cpp", "config": {"model_path": "fim.gguf", "n_threads": 2}}]
    (folder / "models.yaml").write_text(yaml.safe_dump({"models": models}))
    proc = start_server(folder, folder / "models.yaml", "--api", "ollama")
    yield proc
    proc.stop()


def test_suffix_is_placed_between_the_fill_in_the_middle_tokens(
    fim_server: ServerProcess, demo_tokenizer: Tokenizer
) -> None:
    client = Client(host=fim_server.base_url, timeout=120)
    assert "insert" in (client.show("coder").capabilities or [])
    prefix, suffix = "def add(a, b):\n", "\n    return total\n"
    reply = client.generate(model="coder", prompt=prefix, suffix=suffix, options={"temperature": 0, "num_predict": 8})
    assert reply.done and reply.eval_count == 8 and reply.response
    # <PRE> prefix <SUF> suffix <MID>: both texts' tokens plus the three markers (this tokenizer adds no BOS).
    expected = len(demo_tokenizer.encode(prefix).ids) + len(demo_tokenizer.encode(suffix).ids) + 3
    assert reply.prompt_eval_count == expected
    assert reply.context is not None
    layout = list(reply.context[: reply.prompt_eval_count])
    assert [layout[0], layout[-1]] == [FIM_IDS[0], FIM_IDS[2]] and FIM_IDS[1] in layout
