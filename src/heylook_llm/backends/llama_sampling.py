"""Per-sequence sampler chains for the llama.cpp engine, built from llama.cpp's own samplers (all in C)."""

from __future__ import annotations

import random
from typing import Any

import llama_cpp

from heylook_llm.errors import InvalidRequest
from heylook_llm.types import SamplingParams


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
            if not 0 <= token < n_vocab:
                llama_cpp.llama_sampler_free(chain)
                raise InvalidRequest(
                    f"logit_bias token id {token} is outside the vocabulary (0..{n_vocab - 1})",
                    param="logit_bias",
                )
            biases[i].token = token  # type: ignore[assignment]
            # OpenAI's -100 bans a token: -inf keeps it out whatever the later samplers do.
            biases[i].bias = float("-inf") if value <= -100 else value
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
