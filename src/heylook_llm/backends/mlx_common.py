"""What both MLX text backends share: loading an mlx-lm model folder, its chat template, prompt tokens, the
sampler and logits processors of a request, the model's facts, unloading.

`mlx.py` runs sequences on it one at a time (`MLXBackend`) or through mlx-lm's BatchGenerator
(`MLXBatchedBackend`); `backends.mlx_batched` chooses between them from the model's config.
"""

from __future__ import annotations

import gc
import logging
import random
from pathlib import Path
from typing import Any

import mlx.core as mx
from llguidance.hf import from_tokenizer
from mlx_lm.utils import load_model, load_tokenizer, maybe_set_recommended_wired_limit

from heylook_llm.backends.base import Backend
from heylook_llm.backends.chat_template import ChatTemplate
from heylook_llm.backends.constrained import GrammarCache, TokenMask, grammar_text
from heylook_llm.backends.mlx_grammar import GrammarProcessor
from heylook_llm.backends.mlx_logits import LogprobCapture, ReasoningProcessor
from heylook_llm.backends.mlx_support import (
    CacheFactory,
    LogitsSetup,
    Sampler,
    build_logits_processors,
    build_sampler,
    cache_factory,
    model_context_length,
    model_vocab_size,
)
from heylook_llm.backends.native_memory import release_free_heap
from heylook_llm.backends.reasoning_gate import ReasoningGate, prompt_opens_reasoning
from heylook_llm.backends.token_bytes import token_byte_table
from heylook_llm.backends.tokens import PromptLimit, checked_context
from heylook_llm.config.chat_formats import CHAT_FORMATS
from heylook_llm.config.registry import MLXConfig, ModelEntry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.errors import CapabilityError, ContextLengthExceeded, InvalidRequest, ModelLoadError
from heylook_llm.types import Feature, GenerationRequest

log = logging.getLogger(__name__)


class MLXModelBase(Backend):
    """A loaded mlx-lm model and tokenizer; subclasses run its sequences."""

    def __init__(self, entry: ModelEntry, settings: ServerSettings) -> None:
        super().__init__(entry, settings)
        assert isinstance(entry.config, MLXConfig)
        self.config: MLXConfig = entry.config
        self._model: Any = None
        self._tokenizer: Any = None
        self._template: ChatTemplate | None = None
        self._byte_table: list[bytes] | None = None
        self._eos_ids: frozenset[int] = frozenset()
        self._vocab_size = 0
        self._new_cache: CacheFactory | None = None
        self._grammars: GrammarCache | None = None
        self._special_pieces: dict[int, bytes] = {}

    # --- loading --------------------------------------------------------------------------------
    def load(self) -> None:
        cfg = self.config
        if cfg.vision:
            raise ModelLoadError(
                self.entry.id, "vision: true is not served by the MLX text backend yet (it needs mlx-vlm)"
            )
        if not (cfg.model_path / "config.json").is_file():
            raise ModelLoadError(
                self.entry.id, f"model_path {cfg.model_path} is not an MLX model folder (no config.json there)"
            )
        # On Apple Silicon this keeps the weights wired in GPU memory; elsewhere it does nothing.
        maybe_set_recommended_wired_limit()
        try:
            model, config = load_model(cfg.model_path)
            eos = config.get("eos_token_id")
            tokenizer = load_tokenizer(cfg.model_path, eos_token_ids=eos)  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise ModelLoadError(self.entry.id, f"mlx-lm could not load {cfg.model_path}: {exc}") from exc
        self._model, self._tokenizer = model, tokenizer
        self._vocab_size = model_vocab_size(config, len(tokenizer))
        self._new_cache = self._cache_factory()
        self._eos_ids = frozenset(int(t) for t in tokenizer.eos_token_ids)
        self._byte_table = token_byte_table(tokenizer)
        self._template = self._chat_template(tokenizer)
        self.facts.context_length = model_context_length(config, tokenizer)
        self.facts.size_bytes = _folder_weight_bytes(cfg.model_path)
        # On Apple Silicon (or with mlx[cuda]) the weights live in GPU-addressable memory; on CPU they do not.
        on_gpu = mx.default_device().type == mx.DeviceType.gpu
        self.facts.accelerator_bytes = self.facts.size_bytes if on_gpu else 0
        self.facts.chat_template = self._template.source
        self.facts.special_tokens = _special_tokens(tokenizer)
        self._special_pieces = {token: text.encode("utf-8") for text, token in self.facts.special_tokens.items()}
        self.facts.metadata = _metadata(config, cfg, self.facts.context_length)
        features = {Feature.CHAT, Feature.COMPLETION, Feature.CONTEXT_TOKENS}
        if cfg.draft_model_path is None:
            # A grammar, a reasoning budget or logprobs would have to follow the draft model's guesses and their
            # rollback: not done yet.
            features.update((Feature.RESPONSE_FORMAT, Feature.TOOLS, Feature.LOGPROBS, Feature.REASONING))
        self.features = frozenset(features)

    def _cache_factory(self) -> CacheFactory:
        """Fresh KV caches for this model, as the config asks; called once the model and tokenizer are loaded."""
        return cache_factory(self.entry.id, self.config, self._model, None)

    def _share_loaded(self, other: MLXModelBase) -> None:
        """Serve the model `other` has loaded (the same weights, tokenizer, template and facts)."""
        self._model, self._tokenizer, self._template = other._model, other._tokenizer, other._template
        self._byte_table, self._eos_ids, self._vocab_size = other._byte_table, other._eos_ids, other._vocab_size
        self._special_pieces = other._special_pieces
        self._new_cache = other._new_cache
        self.facts, self.features = other.facts, other.features

    def _chat_template(self, tokenizer: Any) -> ChatTemplate:
        source = tokenizer.chat_template
        if isinstance(source, dict):  # several named templates: the unnamed one is "default"
            source = source.get("default")
        if not isinstance(source, str) or not source:
            log.warning("model '%s' has no chat template; chat requests use chatml", self.entry.id)
            source = CHAT_FORMATS["chatml"]
        try:
            return ChatTemplate(source, bos_token=tokenizer.bos_token or "", eos_token=tokenizer.eos_token or "")
        except Exception as exc:
            raise ModelLoadError(self.entry.id, f"the chat template does not compile: {exc}") from exc

    # --- requests -------------------------------------------------------------------------------
    def token_piece(self, token: int) -> bytes:
        """A token's bytes with special tokens as their text (`<|im_end|>`): for markers and logprobs."""
        special = self._special_pieces.get(token)
        if special is not None:
            return special
        table = self._byte_table
        if table is not None:
            return table[token] if 0 <= token < len(table) else b""
        return str(self._tokenizer.decode([token])).encode("utf-8")

    def _prompt_tokens(self, request: GenerationRequest) -> tuple[list[int], str]:
        """The prompt's tokens, and its text (after the template) to see whether it opens the reasoning."""
        tokenizer = self._tokenizer
        context = checked_context(request.context_tokens, self._vocab_size)
        # Continuing from earlier tokens: the BOS token, if any, is already at their start.
        may_add_special = not context
        # Text longer than the context window could hold is refused before tokenizing (backends/tokens.py).
        limit = PromptLimit(self.facts.context_length, self.settings.limits.prompt_bytes_per_token)
        if request.messages is not None:
            assert self._template is not None
            text = self._template.render(request.messages, request.tools, limit=limit, **request.template_variables)
            limit.check(text)
            bos = tokenizer.bos_token or ""
            # Templates that write the BOS token themselves must not get a second one from the tokenizer.
            add_special = may_add_special and not (bos and text.startswith(bos))
            tokens: list[int] = tokenizer.encode(text, add_special_tokens=add_special)
        else:
            text = request.prompt or ""
            limit.check(text)
            # Raw prompts may spell control tokens ("<|im_start|>"), as in the llama.cpp backend.
            tokens = tokenizer.encode(text, add_special_tokens=may_add_special)
        tokens = context + tokens
        if not tokens:
            raise InvalidRequest("the prompt is empty", param="prompt")
        return tokens, text

    def count_tokens(self, request: GenerationRequest) -> int:
        return len(self._prompt_tokens(request)[0])

    def _prepare(self, request: GenerationRequest) -> tuple[list[int], Sampler, LogitsSetup]:
        """Prompt tokens, sampler and logits processors; raises the request's errors before anything runs."""
        params = request.sampling
        tokens, text = self._prompt_tokens(request)
        n_ctx = self.facts.context_length
        if len(tokens) >= n_ctx:
            raise ContextLengthExceeded(len(tokens), n_ctx)
        seed = params.seed if params.seed is not None else random.getrandbits(32)
        sampler = build_sampler(params, self._vocab_size, seed)
        processors = build_logits_processors(params, self._vocab_size, n_ctx)
        processors.grammar = self._grammar_processor(request)
        if request.logprobs:
            processors.logprobs = request.top_logprobs
            processors.capture = LogprobCapture()
        processors.reasoning_open = prompt_opens_reasoning(text, request.reasoning)
        processors.reasoning = self._reasoning_processor(request, processors)
        return tokens, sampler, processors

    def _reasoning_processor(self, request: GenerationRequest, processors: LogitsSetup) -> ReasoningProcessor | None:
        """A gate when the request has a reasoning budget, or a constraint that must wait for the answer."""
        control = request.reasoning
        if control is None or not control.start_marker:
            return None
        opened = processors.reasoning_open
        if control.max_tokens is None and not (processors.grammar is not None and opened):
            return None
        close: list[int] = self._tokenizer.encode(control.close_text, add_special_tokens=False)
        gate = ReasoningGate(control, close, opened=opened)
        return ReasoningProcessor(gate, self.token_piece, processors.grammar)

    def _grammar_processor(self, request: GenerationRequest) -> GrammarProcessor | None:
        """The request's output constraint as a logits processor (None: unconstrained). The grammar tokenizer is
        made from the model's Hugging Face tokenizer on the first constrained request."""
        grammar = grammar_text(request.response_format, request.grammar)
        if grammar is None:
            return None
        if self._grammars is None:
            try:
                hf_tokenizer = self._tokenizer._tokenizer
                lltokenizer = from_tokenizer(hf_tokenizer, n_vocab=self._vocab_size, eos_token=sorted(self._eos_ids))
            except (ValueError, AttributeError) as exc:
                raise CapabilityError(
                    f"model '{self.entry.id}' has a tokenizer the grammar engine cannot read ({exc})",
                    param="response_format",
                ) from exc
            self._grammars = GrammarCache(lltokenizer)
        param = request.grammar.param if request.grammar is not None else "response_format"
        mask = TokenMask(self._grammars.matcher(grammar, param), self._vocab_size)
        return GrammarProcessor(mask, min(self._eos_ids), self._vocab_size)

    # --- unloading ------------------------------------------------------------------------------
    def unload(self) -> None:
        """Drop the model; subclasses release what they hold first, then call this."""
        self._model = self._tokenizer = None
        self._template = None
        self._byte_table = None
        self._new_cache = None
        # MLX keeps freed buffers in its own cache for reuse; hand them back to the system.
        gc.collect()
        mx.clear_cache()
        release_free_heap()


def _folder_weight_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.glob("*.safetensors"))


def _metadata(config: dict[str, Any], cfg: MLXConfig, context_length: int) -> dict[str, str]:
    """A few facts in GGUF's key style, so that both backends describe models alike."""
    text = config.get("text_config") or config
    arch = str(config.get("model_type", "unknown"))
    meta = {
        "general.architecture": arch,
        f"{arch}.context_length": str(context_length),
        "mlx.cache_type": cfg.cache_type,
    }
    for key, name in (("hidden_size", "embedding_length"), ("num_hidden_layers", "block_count")):
        if key in text:
            meta[f"{arch}.{name}"] = str(text[key])
    quant = config.get("quantization")
    if isinstance(quant, dict) and "bits" in quant:
        meta["mlx.quantization_bits"] = str(quant["bits"])
    if cfg.draft_model_path is not None:
        meta["mlx.draft_model_path"] = str(cfg.draft_model_path)
    return meta


def _special_tokens(tokenizer: Any) -> dict[str, int]:
    """Ids of the tokenizer's special added tokens by text (from the Hugging Face tokenizer mlx-lm wraps)."""
    decoder = getattr(getattr(tokenizer, "_tokenizer", None), "added_tokens_decoder", None) or {}
    return {str(t.content): int(i) for i, t in decoder.items() if getattr(t, "special", False)}
