"""Greedy sampling read straight from the logits picks what llama.cpp's own sampler chain picks."""

from __future__ import annotations

import ctypes

import llama_cpp
import numpy as np
import pytest

from heylook_llm.backends.llama_sampling import build_sampler_chain, greedy_pick
from heylook_llm.errors import InvalidRequest
from heylook_llm.types import SamplingParams

pytestmark = pytest.mark.unit

N_VOCAB = 4096


def _chain_pick(params: SamplingParams, logits: np.ndarray) -> int:
    """llama.cpp's chain applied to a candidate array of `logits`, as llama_sampler_sample does."""
    data = np.zeros(N_VOCAB, dtype=[("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
    data["id"] = np.arange(N_VOCAB)
    data["logit"] = logits
    candidates = llama_cpp.llama_token_data_array(
        data=data.ctypes.data_as(ctypes.POINTER(llama_cpp.llama_token_data)), size=N_VOCAB, selected=-1, sorted=False
    )
    chain = build_sampler_chain(N_VOCAB, params, [])
    try:
        llama_cpp.llama_sampler_apply(chain, ctypes.byref(candidates))
    finally:
        llama_cpp.llama_sampler_free(chain)
    return int(data["id"][candidates.selected])


@pytest.mark.parametrize("seed", range(20))
def test_the_pick_matches_the_sampler_chain_with_and_without_bias(seed: int) -> None:
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, N_VOCAB).astype(np.float32)
    logits[rng.integers(0, N_VOCAB, 3)] = logits.max()  # ties: both take the first
    top = int(np.argmax(logits))
    biases = ((top, -100.0), (int(rng.integers(0, N_VOCAB)), 4.5), (int(rng.integers(0, N_VOCAB)), -2.0))
    for bias in ((), biases):
        params = SamplingParams(temperature=0.0, logit_bias=bias)
        pick = greedy_pick(N_VOCAB, params)
        assert pick is not None
        assert pick.pick(logits.copy()) == _chain_pick(params, logits)


def test_requests_that_need_the_chain_get_none() -> None:
    assert greedy_pick(N_VOCAB, SamplingParams(temperature=0.7)) is None
    assert greedy_pick(N_VOCAB, SamplingParams(temperature=0.0, repeat_penalty=1.1)) is None
    assert greedy_pick(N_VOCAB, SamplingParams(temperature=0.0, presence_penalty=0.5)) is None
    assert greedy_pick(N_VOCAB, SamplingParams(temperature=0.0)) is not None


def test_a_bias_outside_the_vocabulary_is_refused_like_the_chain_refuses_it() -> None:
    params = SamplingParams(temperature=0.0, logit_bias=((N_VOCAB, 1.0),))
    with pytest.raises(InvalidRequest) as greedy_error:
        greedy_pick(N_VOCAB, params)
    with pytest.raises(InvalidRequest) as chain_error:
        build_sampler_chain(N_VOCAB, params, [])
    assert greedy_error.value.param == chain_error.value.param == "logit_bias"
    assert str(greedy_error.value) == str(chain_error.value)
