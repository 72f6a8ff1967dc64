"""Model parameters handed to llama.cpp: `use_mmap` must reach whichever field the installed llama.cpp reads."""

from __future__ import annotations

import llama_cpp
import pytest

from heylook_llm.backends.llama_native import model_params

pytestmark = pytest.mark.unit


def _fields(params: object) -> set[str]:
    return {name for name, *_ in type(params)._fields_}  # type: ignore[attr-defined]


@pytest.mark.parametrize("use_mmap", [True, False])
def test_use_mmap_reaches_the_field_llama_cpp_reads(use_mmap: bool) -> None:
    params = model_params(7, use_mmap)
    assert params.n_gpu_layers == 7
    if "load_mode" in _fields(params):
        expected = llama_cpp.LLAMA_LOAD_MODE_AUTO if use_mmap else llama_cpp.LLAMA_LOAD_MODE_NONE
        assert params.load_mode == expected
    else:
        assert params.use_mmap is use_mmap
