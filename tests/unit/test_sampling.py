from __future__ import annotations

import pytest

from heylook_llm.config.sampling import resolve_sampling
from heylook_llm.types import SamplingOverrides, SamplingParams

pytestmark = pytest.mark.unit


def test_request_beats_model_beats_server() -> None:
    server = SamplingParams(temperature=0.8, top_p=0.95, top_k=40, max_tokens=512)
    model = SamplingOverrides(temperature=0.3, top_k=10, stop=["###"])
    request = SamplingOverrides(temperature=0.0, max_tokens=7, logit_bias={5: -100.0, 2: 3.0})
    resolved = resolve_sampling(request, model, server)
    assert resolved.temperature == 0.0  # request, even though it is falsy
    assert resolved.top_k == 10  # model
    assert resolved.top_p == 0.95  # server
    assert resolved.max_tokens == 7
    assert resolved.stop == ("###",)
    assert resolved.logit_bias == ((2, 3.0), (5, -100.0))
    assert resolved.greedy


def test_request_stop_replaces_model_stop_and_empty_strings_are_dropped() -> None:
    resolved = resolve_sampling(SamplingOverrides(stop=["", "END"]), SamplingOverrides(stop=["###"]), SamplingParams())
    assert resolved.stop == ("END",)


def test_nothing_set_gives_server_defaults() -> None:
    server = SamplingParams(temperature=0.5, seed=None)
    assert resolve_sampling(SamplingOverrides(), SamplingOverrides(), server) == server
