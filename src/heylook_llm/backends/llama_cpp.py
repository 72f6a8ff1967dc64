"""llama.cpp backend (GGUF files) through llama-cpp-python.

Chat and completion models run on `LlamaEngine` (llama.cpp's low-level API: one context, `parallel` sequence
slots, continuous batching, prefix cache). Embedding models use llama-cpp-python's `Llama.embed`; rerankers use
llama.cpp's rank pooling (llama_rank.py). With `mmproj_path` the engine also loads a vision projector (libmtmd,
llama_vision.py): a chat request with images is rendered with the projector's marker where each image goes
(before its message's text) and tokenized into text and image chunks.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import TYPE_CHECKING, Any

from llguidance.llamacpp import lltokenizer_from_vocab

from heylook_llm.backends.base import Backend
from heylook_llm.backends.chat_template import ChatTemplate
from heylook_llm.backends.constrained import GrammarCache, TokenMask, grammar_text
from heylook_llm.backends.llama_engine import LlamaEngine
from heylook_llm.backends.llama_native import native_errors, native_reason
from heylook_llm.backends.llama_options import EngineOptions
from heylook_llm.backends.llama_rank import LlamaRanker, RankerOptions, check_pair_lengths
from heylook_llm.backends.llama_sequence import Sequence
from heylook_llm.backends.llama_speculative import speculation_options
from heylook_llm.backends.reasoning_gate import ReasoningGate, prompt_opens_reasoning
from heylook_llm.backends.tokens import PromptLimit, checked_context
from heylook_llm.config.chat_formats import CHAT_FORMATS
from heylook_llm.config.registry import LlamaCppConfig, ModelEntry
from heylook_llm.config.settings import ServerSettings
from heylook_llm.errors import CapabilityError, ContextLengthExceeded, InvalidRequest, ModelLoadError, PromptTooLong
from heylook_llm.types import (
    ChatMessage,
    EmbeddingInputs,
    EmbeddingResult,
    Feature,
    GenerationChunk,
    GenerationRequest,
    ReasoningControl,
    RerankResult,
    ToolSpec,
)

if TYPE_CHECKING:
    # Imported when a projector loads: libmtmd is not needed for text models.
    from heylook_llm.backends.llama_vision import MediaPrompt

log = logging.getLogger(__name__)


class LlamaCppBackend(Backend):
    def __init__(self, entry: ModelEntry, settings: ServerSettings) -> None:
        super().__init__(entry, settings)
        assert isinstance(entry.config, LlamaCppConfig)
        self.config: LlamaCppConfig = entry.config
        self._engine: LlamaEngine | None = None
        self._embedder: Any = None
        self._ranker: LlamaRanker | None = None
        self._template: ChatTemplate | None = None
        self._fim_tokens: tuple[int, int, int] | None = None
        self._grammars: GrammarCache | None = None

    # --- lifecycle ----------------------------------------------------------------------------
    def load(self) -> None:
        cfg = self.config
        if not cfg.model_path.is_file():
            raise ModelLoadError(self.entry.id, f"model_path {cfg.model_path} does not exist or is not a file")
        self.facts.size_bytes = cfg.model_path.stat().st_size
        if cfg.embedding:
            self._load_embedder()
            self.features = frozenset({Feature.EMBEDDING})
        elif cfg.rerank:
            self._load_ranker()
            self.features = frozenset({Feature.RERANK})
        else:
            self._load_engine()
            self.features = self._generation_features()
        self.facts.accelerator_bytes = _offloaded_bytes(self.facts.size_bytes, cfg.n_gpu_layers, self.facts.metadata)

    def _generation_features(self) -> frozenset[Feature]:
        found = {
            Feature.CHAT,
            Feature.COMPLETION,
            Feature.RESPONSE_FORMAT,
            Feature.CONTEXT_TOKENS,
            Feature.TOOLS,
            Feature.LOGPROBS,
            Feature.REASONING,
        }
        if self._engine is not None and self._engine.vision is not None:
            found.add(Feature.IMAGES)
        if self._fim_tokens is not None:
            found.add(Feature.FILL_IN_MIDDLE)
        return frozenset(found)

    def _threads(self) -> int:
        # One-token steps leave a core to the event loop and the clients: llama.cpp's threads spin while they
        # wait, and a core they share slows every token down (measured in benchmarks/README.md).
        return self.config.n_threads or max(1, (os.cpu_count() or 2) // 2)

    def _batch_threads(self) -> int:
        return self.config.n_threads_batch or max(1, os.cpu_count() or 2)

    def _load_engine(self) -> None:
        cfg = self.config
        if cfg.mmproj_path is not None and not cfg.mmproj_path.is_file():
            raise ModelLoadError(self.entry.id, f"mmproj_path {cfg.mmproj_path} does not exist or is not a file")
        engine = LlamaEngine(
            EngineOptions(
                model_path=cfg.model_path,
                n_ctx=cfg.n_ctx,
                parallel=cfg.parallel,
                n_batch=cfg.n_batch,
                n_threads=self._threads(),
                n_threads_batch=self._batch_threads(),
                flash_attn=cfg.flash_attn,
                n_gpu_layers=cfg.n_gpu_layers,
                use_mmap=cfg.use_mmap,
                prefix_cache=cfg.prefix_cache,
                mmproj_path=cfg.mmproj_path,
                cache_type_k=cfg.cache_type_k,
                cache_type_v=cfg.cache_type_v,
                kv_unified=cfg.kv_unified,
                on_progress=self._loading,
            ),
            speculation_options(cfg),
        )
        try:
            engine.load()
        except RuntimeError as exc:
            raise ModelLoadError(self.entry.id, str(exc)) from exc
        self._engine = engine
        self.max_parallel = cfg.parallel
        self.facts.context_length = cfg.n_ctx
        self.facts.metadata = engine.metadata()
        fim = (engine.fim_token("pre"), engine.fim_token("suf"), engine.fim_token("mid"))
        self._fim_tokens = fim if all(t >= 0 for t in fim) else None
        self._template = self._chat_template(self.facts.metadata)
        self.facts.chat_template = self._template.source
        self.facts.special_tokens = engine.special_tokens()

    def _loading(self, fraction: float) -> None:
        self.facts.load_fraction = fraction

    def _load_embedder(self) -> None:
        from llama_cpp import Llama

        cfg = self.config
        try:
            with native_errors() as errors:
                self._embedder = Llama(
                    model_path=str(cfg.model_path),
                    n_ctx=cfg.n_ctx,
                    n_gpu_layers=cfg.n_gpu_layers,
                    n_threads=self._threads(),
                    n_batch=cfg.n_batch,
                    use_mmap=cfg.use_mmap,
                    embedding=True,
                    verbose=False,
                )
        except (ValueError, RuntimeError) as exc:
            # llama-cpp-python's exception only repeats the path; llama.cpp's log says why.
            reason = native_reason(errors, str(exc))
            raise ModelLoadError(self.entry.id, f"llama.cpp could not load {cfg.model_path}: {reason}") from exc
        self.facts.context_length = self._embedder.n_ctx()
        self.facts.metadata = dict(self._embedder.metadata)

    def _load_ranker(self) -> None:
        cfg = self.config
        ranker = LlamaRanker(
            RankerOptions(
                model_path=cfg.model_path,
                n_ctx=cfg.n_ctx,
                max_sequences=cfg.parallel,
                n_threads=self._batch_threads(),
                n_threads_batch=self._batch_threads(),
                n_gpu_layers=cfg.n_gpu_layers,
                use_mmap=cfg.use_mmap,
            )
        )
        try:
            ranker.load()
        except RuntimeError as exc:
            raise ModelLoadError(self.entry.id, str(exc)) from exc
        self._ranker = ranker
        self.facts.context_length = ranker.n_ctx
        self.facts.metadata = ranker.metadata()

    def unload(self) -> None:
        if self._ranker is not None:
            self._ranker.unload()
            self._ranker = None
        if self._engine is not None:
            self._engine.unload()
            self._engine = None
        if self._embedder is not None:
            self._embedder.close()
            self._embedder = None
        self._template = None

    def _chat_template(self, metadata: dict[str, str]) -> ChatTemplate:
        cfg = self.config
        engine = self._require_engine()
        source = cfg.chat_template
        if source is None and cfg.chat_format is not None:
            source = CHAT_FORMATS[cfg.chat_format]
        if source is None:
            source = metadata.get("tokenizer.chat_template")
        if source is None:
            log.warning(
                "model '%s' has no chat template; chat requests use chatml (set chat_format to change)", self.entry.id
            )
            source = CHAT_FORMATS["chatml"]
        try:
            return ChatTemplate(
                source, bos_token=engine.token_text(engine.bos_id), eos_token=engine.token_text(engine.eos_id)
            )
        except Exception as exc:
            raise ModelLoadError(self.entry.id, f"the chat template does not compile: {exc}") from exc

    def _require_engine(self) -> LlamaEngine:
        if self._engine is None:
            kind = "a reranker" if self._ranker is not None else "an embedding model"
            raise CapabilityError(f"model '{self.entry.id}' is {kind} and cannot generate text", param="model")
        return self._engine

    # --- requests -----------------------------------------------------------------------------
    def check_request(self, request: GenerationRequest) -> None:
        if request.suffix is not None and request.messages is not None:
            raise InvalidRequest("suffix works with a prompt, not with chat messages", param="suffix")

    def _render_chat(
        self,
        messages: list[ChatMessage],
        may_add_bos: bool,
        tools: list[ToolSpec] | None = None,
        variables: dict[str, Any] | None = None,
    ) -> tuple[str, bool]:
        """The chat template's text, and whether the tokenizer should still add the BOS token."""
        engine = self._require_engine()
        assert self._template is not None
        limit = self._prompt_limit()
        text = self._template.render(messages, tools or (), limit=limit, **(variables or {}))
        limit.check(text)
        bos = engine.token_text(engine.bos_id)
        # Templates that write the BOS token themselves must not get a second one from the tokenizer.
        return text, may_add_bos and not (bos and text.startswith(bos))

    def _prompt_limit(self) -> PromptLimit:
        """The most prompt text the context window could hold, checked before tokenizing (backends/tokens.py)."""
        return PromptLimit(self.config.n_ctx, self.settings.limits.prompt_bytes_per_token)

    def _prompt_tokens(self, request: GenerationRequest) -> tuple[list[int], str]:
        """The prompt's tokens, and its text (after the template) to see whether it opens the reasoning."""
        engine = self._require_engine()
        context = checked_context(request.context_tokens, engine.n_vocab)
        # Continuing from earlier tokens: the BOS token is already at their start.
        may_add_bos = engine.add_bos and not context
        if request.messages is not None:
            text, add_bos = self._render_chat(request.messages, may_add_bos, request.tools, request.template_variables)
            tokens = engine.tokenize(text, add_bos=add_bos, special=True)
        else:
            text = request.prompt or ""
            self._prompt_limit().check(text, request.suffix or "")
            # Raw prompts may spell control tokens ("<|im_start|>"), as llama.cpp's own server allows.
            tokens = engine.tokenize(text, add_bos=may_add_bos, special=True)
            if request.suffix is not None:
                tokens = self._fill_in_middle(tokens, request.suffix, may_add_bos)
                text = ""
        tokens = context + tokens
        if not tokens:
            raise InvalidRequest("the prompt is empty", param="prompt")
        return tokens, text

    def _fill_in_middle(self, prefix: list[int], suffix: str, add_bos: bool) -> list[int]:
        """Prefix-suffix-middle order: [BOS] <PRE> prefix <SUF> suffix <MID>; the model writes the middle."""
        engine = self._require_engine()
        if self._fim_tokens is None:
            raise CapabilityError(f"model '{self.entry.id}' has no fill-in-the-middle tokens", param="suffix")
        pre, suf, mid = self._fim_tokens
        bos = engine.bos_id
        if prefix and prefix[0] == bos and add_bos:
            prefix = prefix[1:]
        suffix_tokens = engine.tokenize(suffix, add_bos=False, special=False)
        return [*([bos] if add_bos else []), pre, *prefix, suf, *suffix_tokens, mid]

    def _media_prompt(self, request: GenerationRequest) -> MediaPrompt:
        """Each message's images as markers before its text (as the MLX vision path places them), tokenized
        with the images by libmtmd."""
        engine = self._require_engine()
        vision = engine.vision
        assert vision is not None and request.messages is not None
        context = checked_context(request.context_tokens, engine.n_vocab)
        marked = [
            dataclasses.replace(m, content="".join(f"{vision.marker}\n" for _ in m.images) + m.content, images=[])
            for m in request.messages
        ]
        text, add_bos = self._render_chat(
            marked, engine.add_bos and not context, request.tools, request.template_variables
        )
        images = [image for m in request.messages for image in m.images]
        media = vision.tokenize(text, images, add_special=add_bos, workers=self.settings.images.decode_threads)
        media.prepend(context)
        return media

    def count_tokens(self, request: GenerationRequest) -> int:
        if not _has_images(request):
            return len(self._prompt_tokens(request)[0])
        media = self._media_prompt(request)
        try:
            return media.token_count
        finally:
            media.release()

    def open_sequence(self, request: GenerationRequest) -> Sequence:
        engine = self._require_engine()
        logprobs = request.top_logprobs if request.logprobs else None
        if not _has_images(request):
            tokens, text = self._prompt_tokens(request)
            if len(tokens) >= self.config.n_ctx:
                raise ContextLengthExceeded(len(tokens), self.config.n_ctx)
            mask = self._token_mask(request)
            opened = prompt_opens_reasoning(text, request.reasoning)
            gate = self._reasoning_gate(request.reasoning, mask is not None, opened)
            return engine.open(
                tokens,
                request.sampling,
                mask,
                request.return_tokens,
                logprobs=logprobs,
                gate=gate,
                reasoning_open=opened,
            )
        media = self._media_prompt(request)
        try:
            if media.token_count >= self.config.n_ctx:
                raise ContextLengthExceeded(media.token_count, self.config.n_ctx)
            mask = self._token_mask(request)
            return engine.open(media.positions, request.sampling, mask, request.return_tokens, media, logprobs=logprobs)
        except BaseException:
            media.release()
            raise

    def _reasoning_gate(
        self, control: ReasoningControl | None, constrained: bool, opened: bool
    ) -> ReasoningGate | None:
        """A gate when the request has a reasoning budget, or a constraint that must wait for the answer."""
        if control is None or not control.start_marker:
            return None
        if control.max_tokens is None and not (constrained and opened):
            return None
        engine = self._require_engine()
        close = engine.tokenize(control.close_text, add_bos=False, special=True)
        return ReasoningGate(control, close, opened=opened)

    def _token_mask(self, request: GenerationRequest) -> TokenMask | None:
        """The request's output constraint as a token mask (None: unconstrained). The grammar tokenizer is made
        from the model's vocabulary on the first constrained request (a few ms to a second)."""
        grammar = grammar_text(request.response_format, request.grammar)
        if grammar is None:
            return None
        engine = self._require_engine()
        if self._grammars is None:
            self._grammars = GrammarCache(lltokenizer_from_vocab(engine.vocab, n_vocab=engine.n_vocab))
        param = request.grammar.param if request.grammar is not None else "response_format"
        return TokenMask(self._grammars.matcher(grammar, param), engine.n_vocab)

    def step(self, sequences: list[Any]) -> list[GenerationChunk | BaseException | None]:
        return list(self._require_engine().step(sequences))

    def close_sequence(self, sequence: Any) -> None:
        if self._engine is not None:
            self._engine.close(sequence)

    def rerank(self, query: str, documents: list[str]) -> RerankResult:
        ranker = self._ranker
        if ranker is None:
            raise CapabilityError(
                f"model '{self.entry.id}' is not a reranker (set rerank: true in the config of a reranker GGUF)",
                param="model",
            )
        limit = PromptLimit(ranker.n_ctx, self.settings.limits.prompt_bytes_per_token)
        for index, document in enumerate(documents):
            try:
                limit.check(query, document)
            except PromptTooLong as exc:
                raise InvalidRequest(f"documents[{index}] with the query: {exc}", param=f"documents[{index}]") from exc
        pairs = [ranker.pair_tokens(query, document) for document in documents]
        check_pair_lengths([len(pair) for pair in pairs], ranker.n_ctx)
        return RerankResult(scores=ranker.score(pairs), prompt_tokens=sum(len(pair) for pair in pairs))

    def embed(self, inputs: EmbeddingInputs, *, truncate: bool = False) -> EmbeddingResult:
        if self._embedder is None:
            if self._ranker is not None:
                raise CapabilityError(
                    f"model '{self.entry.id}' is a reranker: it scores documents (POST /v1/rerank), it does not "
                    "produce embeddings",
                    param="model",
                )
            raise CapabilityError(
                f"model '{self.entry.id}' is not an embedding model (set embedding: true in its config)",
                param="model",
            )
        embedder = self._embedder
        n_ctx = self.facts.context_length
        limit = PromptLimit(n_ctx, self.settings.limits.prompt_bytes_per_token)
        token_lists = _token_lists(inputs, embedder, limit, truncate)
        if not truncate:
            for tokens in token_lists:
                if len(tokens) > n_ctx:
                    raise ContextLengthExceeded(len(tokens), n_ctx)
        # Llama.embed tokenizes each text itself; an instance attribute that hands out the lists already made
        # shadows its tokenize for this call, so token-id inputs are embedded exactly as given. The worker thread
        # owns the embedder, so nothing else calls it meanwhile.
        pending = iter(token_lists)
        embedder.tokenize = lambda *_args, **_kwargs: next(pending)
        try:
            # llama-cpp-python's truncate keeps the first n_ctx tokens of each input (Ollama's truncate does too).
            vectors, count = embedder.embed(
                [""] * len(token_lists), normalize=True, truncate=truncate, return_count=True
            )
        finally:
            del embedder.tokenize
        return EmbeddingResult(vectors=[list(map(float, v)) for v in vectors], prompt_tokens=int(count))


def _token_lists(inputs: EmbeddingInputs, embedder: Any, limit: PromptLimit, truncate: bool) -> list[list[int]]:
    """Texts tokenized as Llama.embed tokenizes them; token-id lists checked against the vocabulary."""
    n_vocab = int(embedder.n_vocab())
    lists: list[list[int]] = []
    for index, item in enumerate(inputs):
        if isinstance(item, str):
            if truncate:
                # Tokens past the window are cut anyway: text past what the window could hold is not tokenized.
                item = item[: limit.max_bytes]
            else:
                limit.check(item)
            lists.append(list(embedder.tokenize(item.encode("utf-8"))))
            continue
        bad = next((token for token in item if not 0 <= token < n_vocab), None)
        if bad is not None:
            raise InvalidRequest(
                f"input[{index}] holds token id {bad}, outside this model's vocabulary (0 to {n_vocab - 1})",
                param="input",
            )
        lists.append(list(item))
    return lists


def _has_images(request: GenerationRequest) -> bool:
    return request.messages is not None and any(m.images for m in request.messages)


def _offloaded_bytes(size_bytes: int, n_gpu_layers: int, metadata: dict[str, str]) -> int:
    """Roughly how much of the weights llama.cpp put in GPU memory (a share by offloaded layers)."""
    import llama_cpp

    if n_gpu_layers == 0 or not llama_cpp.llama_supports_gpu_offload():
        return 0
    architecture = metadata.get("general.architecture", "")
    try:
        layers = int(metadata.get(f"{architecture}.block_count", "0"))
    except ValueError:
        layers = 0
    if n_gpu_layers < 0 or layers == 0 or n_gpu_layers > layers:
        return size_bytes
    return size_bytes * n_gpu_layers // (layers + 1)
