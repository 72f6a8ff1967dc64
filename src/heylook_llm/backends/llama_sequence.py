"""One request being generated in a llama.cpp engine slot (backends/llama_engine.py)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from heylook_llm.backends.constrained import TokenMask
from heylook_llm.backends.llama_sampling import GreedyPick
from heylook_llm.backends.llama_slots import Slot
from heylook_llm.backends.reasoning_gate import ReasoningGate
from heylook_llm.backends.text import StopMatcher, Utf8Assembler
from heylook_llm.types import SamplingParams

if TYPE_CHECKING:
    from heylook_llm.backends.llama_speculative import SequenceDrafting
    from heylook_llm.backends.llama_vision import MediaPrompt


@dataclass(eq=False, slots=True)
class Sequence:
    """One request being generated in a slot."""

    slot: Slot
    prompt: list[int]
    pending: list[int]
    """Prompt tokens not yet evaluated."""
    sampler: Any
    params: SamplingParams
    budget: int
    cached_tokens: int
    return_tokens: bool
    assembler: Utf8Assembler = field(default_factory=Utf8Assembler)
    stops: StopMatcher = field(default_factory=lambda: StopMatcher(()))
    output: list[int] = field(default_factory=list)
    next_token: int = -1
    """The last sampled token, fed to the next decode step."""
    logits_index: int = -1
    started: float = field(default_factory=time.perf_counter)
    first_token_at: float = 0.0
    done: bool = False
    media: MediaPrompt | None = None
    """The images of the prompt still to evaluate (and the chunk list owning them); None for text prompts."""
    prompt_tokens: int = 0
    """Prompt size reported to clients: len(prompt), or text plus image embedding tokens."""
    mask: TokenMask | None = None
    """The output constraint (JSON schema, grammar, regex), applied to the logits before the sampler chain."""
    logprobs: int | None = None
    """Report each token's log probability with this many alternatives; None: not asked (logits are not read)."""
    gate: ReasoningGate | None = None
    """The reasoning section (budget, constraint deferred until the answer); None when the request needs neither."""
    reasoning_open: bool = False
    """The prompt ends inside the reasoning section: said on the first chunk."""
    drafting: SequenceDrafting | None = None
    """Speculative decoding's drafts and counts (llama_speculative.py); None when the sequence does not speculate."""
    greedy: GreedyPick | None = None
    """Greedy sampling without the sampler chain (`sampler` is then None); None when the chain samples."""
