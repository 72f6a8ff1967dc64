"""Per-sequence sampler chains for the llama.cpp engine, built from llama.cpp's own samplers (all in C)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import llama_cpp
import numpy as np

from heylook_llm.errors import InvalidRequest
from heylook_llm.types import SamplingParams


@dataclass(frozen=True, slots=True)
class GreedyPick:
    """Greedy sampling read straight from llama.cpp's logits row: the logit bias added in place, then the first
    largest logit, as llama.cpp's logit-bias and greedy samplers pick it. llama_sampler_sample first copies the
    whole vocabulary into a fresh candidate array (a page-faulting allocation for a large vocabulary) on every
    call; for a greedy request without penalties that is all it would do, so this skips it."""

    tokens: np.ndarray[Any, np.dtype[np.int64]] | None
    biases: np.ndarray[Any, np.dtype[np.float32]] | None

    def pick(self, logits: np.ndarray[Any, np.dtype[np.float32]]) -> int:
        if self.tokens is not None and self.biases is not None:
            logits[self.tokens] += self.biases
        return int(logits.argmax())


def greedy_pick(n_vocab: int, params: SamplingParams) -> GreedyPick | None:
    """A `GreedyPick` for a greedy request without repetition penalties (which keep history in their sampler);
    None when the request needs the sampler chain."""
    if not params.greedy or params.repeat_penalty != 1.0 or params.frequency_penalty or params.presence_penalty:
        return None
    if not params.logit_bias:
        return GreedyPick(None, None)
    summed: dict[int, float] = {}
    for token, value in params.logit_bias:
        _check_bias_token(token, n_vocab)
        summed[token] = summed.get(token, 0.0) + _bias_value(value)
    return GreedyPick(
        np.fromiter(summed.keys(), dtype=np.int64, count=len(summed)),
        np.fromiter(summed.values(), dtype=np.float32, count=len(summed)),
    )


def _check_bias_token(token: int, n_vocab: int) -> None:
    if not 0 <= token < n_vocab:
        raise InvalidRequest(
            f"logit_bias token id {token} is outside the vocabulary (0..{n_vocab - 1})", param="logit_bias"
        )


def _bias_value(value: float) -> float:
    # OpenAI's -100 bans a token: -inf keeps it out whatever the later samplers do.
    return float("-inf") if value <= -100 else value


def build_sampler_chain(n_vocab: int, params: SamplingParams, prompt: list[int]) -> Any:
    """One sequence's llama_sampler chain: logit bias, penalties, then greedy or top-k/top-p/min-p/temperature and a
    seeded draw. An output constraint masks the logits before the chain runs (backends/constrained.py). The caller
    frees the chain with llama_sampler_free."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())

    def add(sampler: Any) -> None:
        llama_cpp.llama_sampler_chain_add(chain, sampler)

    if params.logit_bias:
        biases = (llama_cpp.llama_logit_bias * len(params.logit_bias))()
        for i, (token, value) in enumerate(params.logit_bias):
            try:
                _check_bias_token(token, n_vocab)
            except InvalidRequest:
                llama_cpp.llama_sampler_free(chain)
                raise
            biases[i].token = token  # type: ignore[assignment]
            biases[i].bias = _bias_value(value)
        add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(params.logit_bias), biases))
    if params.repeat_penalty != 1.0 or params.frequency_penalty or params.presence_penalty:
        penalties = llama_cpp.llama_sampler_init_penalties(
            n_vocab,
            params.repeat_last_n,
            params.repeat_penalty,
            params.frequency_penalty,
            params.presence_penalty,
        )
        # The prompt counts as history for repetition penalties, as in llama.cpp's own server.
        for token in prompt[-params.repeat_last_n :] if params.repeat_last_n > 0 else []:
            if token >= 0:
                llama_cpp.llama_sampler_accept(penalties, token)
        add(penalties)
    if params.greedy:
        add(llama_cpp.llama_sampler_init_greedy())
    else:
        if params.top_k > 0:
            add(llama_cpp.llama_sampler_init_top_k(params.top_k))
        if params.top_p < 1.0:
            add(llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        if params.min_p > 0.0:
            add(llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
        add(llama_cpp.llama_sampler_init_temp(params.temperature))
        seed = params.seed if params.seed is not None else random.getrandbits(32)
        add(llama_cpp.llama_sampler_init_dist(seed & 0xFFFFFFFF))
    return chain
