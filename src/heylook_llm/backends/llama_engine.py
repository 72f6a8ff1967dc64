"""llama.cpp on its low-level C API: one context with N sequence slots, continuous batching, a prefix cache.

Every step builds one `llama_batch` holding the next token of every decoding sequence plus as many prompt
tokens of prefilling sequences as `n_batch` allows, runs one `llama_decode`, then samples each sequence that
has logits with its own `llama_sampler` chain (all in C). A finished sequence leaves its tokens in its slot's
KV cache; the next request picks the free slot whose cached tokens share the longest prefix with its prompt
(llama_slots.py) and evaluates only the rest.

With a vision projector (`mmproj_path`, see llama_vision.py) a prompt may hold images: their positions are
negative ids in the token lists (derived from the image's content, so only the same image matches in the prefix
cache), and each image is evaluated into its slot by libmtmd when the sequence's reading reaches it.

All methods run on the model's worker thread.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import llama_cpp
import numpy as np

from heylook_llm.backends.constrained import TokenMask
from heylook_llm.backends.llama_native import free_native, init_backend, native_errors, native_reason
from heylook_llm.backends.llama_native import model_params as native_model_params
from heylook_llm.backends.llama_options import EngineOptions, default_flash_attn
from heylook_llm.backends.llama_sampling import build_sampler_chain, greedy_pick
from heylook_llm.backends.llama_sequence import Sequence
from heylook_llm.backends.llama_slots import STREAM_COPY_BYTES_PER_SECOND, Slot, SlotTable
from heylook_llm.backends.llama_speculative import (
    DraftModel,
    SpeculationOptions,
    Speculator,
    load_speculator,
)
from heylook_llm.backends.llama_vocab import LlamaVocabulary
from heylook_llm.backends.logprobs import Distribution, describe
from heylook_llm.backends.reasoning_gate import ReasoningGate
from heylook_llm.backends.text import StopMatcher
from heylook_llm.errors import GenerationFailed, InvalidRequest
from heylook_llm.types import FinishReason, GenerationChunk, GenerationStats, SamplingParams

if TYPE_CHECKING:
    from heylook_llm.backends.llama_vision import MediaPrompt, VisionProjector


log = logging.getLogger(__name__)

KV_CACHE_TYPES = {"f16": llama_cpp.GGML_TYPE_F16, "q8_0": llama_cpp.GGML_TYPE_Q8_0, "q4_0": llama_cpp.GGML_TYPE_Q4_0}
"""models.yaml's cache_type_k / cache_type_v -> ggml type."""
CPU_PREFILL_GROUP_TOKENS = 64
"""On CPU, a step starts no further prompt once it holds this many prompt tokens: prompts that arrive together are
read a few at a time, so the first ones get their first token after their own prompt instead of everyone's (the
median time to first token of 8 simultaneous requests falls by about a third) while a CPU's matrix products are
already near full speed at this many tokens. With GPU offload every waiting prompt shares the step (n_batch)."""
KV_CACHE_TYPE_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
"""Bytes per cached value of each cache type (q8_0 and q4_0 store 32 values in 34 and 18 bytes)."""


def _progress_callback(opts: EngineOptions) -> Any:
    """llama.cpp's load progress callback calling `opts.on_progress` (None without one); returning True goes on."""
    report = opts.on_progress
    if report is None:
        return None

    def progress(fraction: float, _user_data: Any) -> bool:
        try:
            report(float(fraction))
        except Exception:
            log.exception("the load progress report failed")
        return True

    return llama_cpp.llama_progress_callback(progress)


class LlamaEngine(LlamaVocabulary):
    def __init__(self, options: EngineOptions, speculation: SpeculationOptions | None = None) -> None:
        self.options = options
        self.speculation = speculation
        self._speculator: Speculator | None = None
        self._model: Any = None
        self._ctx: Any = None
        self._vocab: Any = None
        self._batch: Any = None
        self._batch_capacity = 0
        self._prefill_group = 0
        """Prompt tokens after which a step starts no further prompt (CPU_PREFILL_GROUP_TOKENS on CPU)."""
        self._slots: SlotTable | None = None
        self._pieces: dict[int, bytes] = {}
        self._special_pieces: dict[int, bytes] = {}
        self.eog_ids: frozenset[int] = frozenset()
        self.n_vocab = 0
        self.add_bos = False
        self.flash_attn: bool | None = None
        """Flash attention as set on the context at load: forced on or off, or None where llama.cpp decides."""
        self.vision: VisionProjector | None = None
        """The loaded projector (`mmproj_path`): tokenizes prompts with images into a `MediaPrompt` for `open`."""

    # --- lifecycle ----------------------------------------------------------------------------
    def load(self) -> None:
        init_backend()
        opts = self.options
        model_params = native_model_params(opts.n_gpu_layers, opts.use_mmap)
        progress = _progress_callback(opts)
        if progress is not None:
            model_params.progress_callback = progress
        with native_errors() as errors:
            self._model = llama_cpp.llama_model_load_from_file(str(opts.model_path).encode(), model_params)
        del progress  # llama.cpp calls it only while loading; the reference kept it alive until then
        if not self._model:
            reason = native_reason(errors, "it gave no reason")
            raise RuntimeError(f"llama.cpp could not load {opts.model_path}: {reason}")
        ctx_params = llama_cpp.llama_context_default_params()
        # Unified: the slots share one pool of n_ctx tokens (each may use all of it), as llama-server's --kv-unified.
        ctx_params.n_ctx = opts.n_ctx if opts.kv_unified else opts.n_ctx * opts.parallel
        ctx_params.n_seq_max = opts.parallel
        ctx_params.n_batch = max(opts.n_batch, opts.parallel)
        ctx_params.n_ubatch = ctx_params.n_batch
        ctx_params.n_threads = opts.n_threads
        ctx_params.n_threads_batch = opts.n_threads_batch or opts.n_threads
        flash_attn = opts.flash_attn if opts.flash_attn is not None else self._flash_attn_default(opts)
        if opts.cache_type_v != "f16":
            flash_attn = True  # llama.cpp stores a quantized V cache only with flash attention
        ctx_params.type_k = KV_CACHE_TYPES[opts.cache_type_k]
        ctx_params.type_v = KV_CACHE_TYPES[opts.cache_type_v]
        self.flash_attn = flash_attn
        if flash_attn is not None:
            ctx_params.flash_attn_type = (
                llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn else llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED
            )
        ctx_params.kv_unified = opts.kv_unified
        ctx_params.no_perf = True
        with native_errors() as errors:
            self._ctx = llama_cpp.llama_init_from_model(self._model, ctx_params)
        if not self._ctx:
            self.unload()
            reason = native_reason(errors, "it gave no reason")
            raise RuntimeError(f"llama.cpp could not create a context of {ctx_params.n_ctx} tokens: {reason}")
        self._vocab = llama_cpp.llama_model_get_vocab(self._model)
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self.add_bos = bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))
        self.eog_ids = frozenset(t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t))
        self._batch_capacity = int(ctx_params.n_batch)
        offloaded = opts.n_gpu_layers != 0 and bool(llama_cpp.llama_supports_gpu_offload())
        self._prefill_group = self._batch_capacity if offloaded else CPU_PREFILL_GROUP_TOKENS
        self._batch = llama_cpp.llama_batch_init(self._batch_capacity, 0, 1)
        self._slots = SlotTable(
            llama_cpp.llama_get_memory(self._ctx), opts.parallel, opts.prefix_cache, self._stream_copy_seconds()
        )
        if opts.mmproj_path is not None:
            from heylook_llm.backends.llama_vision import VisionProjector

            try:
                self.vision = VisionProjector(
                    opts.mmproj_path, self._model, n_threads=opts.n_threads, use_gpu=opts.n_gpu_layers != 0
                )
            except RuntimeError:
                self.unload()
                raise
        if self.speculation is not None:
            self._load_speculator(self.speculation)

    def _stream_copy_seconds(self) -> float | None:
        """About how long llama.cpp takes to copy one slot's KV stream to another (it copies the whole stream, not
        just the cells in use); 0 with a unified cache, where a copy only tags cells. None for models whose
        state is not a plain KV cache (recurrent and hybrid models)."""
        opts = self.options
        if llama_cpp.llama_model_is_recurrent(self._model) or llama_cpp.llama_model_is_hybrid(self._model):
            return None
        if opts.kv_unified:
            return 0.0
        heads = int(llama_cpp.llama_model_n_head(self._model))
        if heads <= 0:
            return None
        head_width = int(llama_cpp.llama_model_n_embd(self._model)) // heads
        per_token = (
            int(llama_cpp.llama_model_n_layer(self._model))
            * int(llama_cpp.llama_model_n_head_kv(self._model))
            * head_width
            * (KV_CACHE_TYPE_BYTES[opts.cache_type_k] + KV_CACHE_TYPE_BYTES[opts.cache_type_v])
        )
        return opts.n_ctx * per_token / STREAM_COPY_BYTES_PER_SECOND

    def _load_speculator(self, speculation: SpeculationOptions) -> None:
        opts = self.options
        draft = None
        if speculation.draft_model_path is not None:
            draft = DraftModel(
                speculation.draft_model_path,
                n_ctx=opts.n_ctx,
                parallel=opts.parallel,
                n_batch=opts.n_batch,
                n_threads=opts.n_threads,
                n_threads_batch=opts.n_threads_batch or opts.n_threads,
                n_gpu_layers=opts.n_gpu_layers,
                use_mmap=opts.use_mmap,
            )
        elif llama_cpp.llama_model_is_recurrent(self._model) or llama_cpp.llama_model_is_hybrid(self._model):
            self.unload()
            raise RuntimeError("speculative decoding needs a transformer model: a recurrent state cannot be rewound")
        try:
            self._speculator = load_speculator(speculation, self._vocab, draft)
        except RuntimeError:
            self.unload()
            raise

    def unload(self) -> None:
        if self._speculator is not None:
            self._speculator.unload()
            self._speculator = None
        if self.vision is not None:
            self.vision.close()
            self.vision = None
        free_native(self._batch, self._ctx, self._model)
        self._batch = self._ctx = self._model = None
        self._slots = None
        self._pieces.clear()
        self._special_pieces.clear()

    def _flash_attn_default(self, opts: EngineOptions) -> bool | None:
        offloaded = opts.n_gpu_layers != 0 and bool(llama_cpp.llama_supports_gpu_offload())
        heads = int(llama_cpp.llama_model_n_head(self._model))
        head_width = int(llama_cpp.llama_model_n_embd(self._model)) // heads if heads > 0 else 0
        return default_flash_attn(head_width, offloaded)

    # --- sequences ----------------------------------------------------------------------------
    @property
    def free_slots(self) -> int:
        return self._slot_table.free

    @property
    def _slot_table(self) -> SlotTable:
        if self._slots is None:
            raise GenerationFailed("the model is not loaded")
        return self._slots

    def open(
        self,
        prompt: list[int],
        params: SamplingParams,
        mask: TokenMask | None,
        return_tokens: bool,
        media: MediaPrompt | None = None,
        *,
        logprobs: int | None = None,
        gate: ReasoningGate | None = None,
        reasoning_open: bool = False,
    ) -> Sequence:
        """Claim the free slot sharing the longest cached prefix with `prompt` and prepare its sampler.

        With `media`, `prompt` is `media.positions`; the sequence owns `media` once open returns (`close` frees it).
        `logprobs`: report log probabilities with that many alternatives (None: not asked).
        """
        if media is not None and prompt and prompt[-1] < 0:
            # The first sample needs logits of a text token; chat templates always end with text.
            raise InvalidRequest("the prompt must end with text after its last image")
        slots = self._slot_table
        greedy = greedy_pick(self.n_vocab, params)
        sampler = build_sampler_chain(self.n_vocab, params, prompt) if greedy is None else None
        slot, reuse = slots.claim(prompt)
        # At least the last prompt token is evaluated again, to get logits for the first sample.
        reuse = min(reuse, len(prompt) - 1)
        if media is not None:
            reuse = media.whole_images_before(reuse)
        reuse = slots.keep(slot, reuse)
        if media is not None:
            media.drop_reused(reuse)
        prompt_tokens = media.token_count if media is not None else len(prompt)
        budget = min(params.max_tokens, self.options.n_ctx - prompt_tokens)
        if self.options.kv_unified:
            self._make_pool_room(slot, prompt_tokens - reuse + max(0, budget))
        seq = Sequence(
            slot=slot,
            prompt=prompt,
            pending=prompt[reuse:],
            sampler=sampler,
            params=params,
            budget=budget,
            cached_tokens=reuse,
            # Token ids cannot carry images: a context handed back without them would silently drop them.
            return_tokens=return_tokens and media is None,
            stops=StopMatcher(params.stop),
            media=media,
            prompt_tokens=prompt_tokens,
            mask=mask,
            logprobs=logprobs,
            gate=gate,
            reasoning_open=reasoning_open,
            greedy=greedy,
        )
        if self._speculator is not None:
            seq.drafting = self._speculator.attach(seq)
        return seq

    def _make_pool_room(self, slot: Slot, needed: int) -> None:
        """kv_unified: every slot's tokens share one pool of n_ctx cells. Drop the cached prefixes of idle slots,
        least recently used first, until `needed` more tokens fit (busy sequences keep theirs)."""
        table = self._slot_table
        used = sum(len(s.cached) for s in table.slots)
        idle_slots = [s for s in table.slots if not s.busy and s is not slot and s.cached]
        for idle in sorted(idle_slots, key=lambda s: s.last_used):
            if used + needed <= self.options.n_ctx:
                break
            used -= len(idle.cached)
            table.clear(idle)

    def close(self, seq: Sequence) -> None:
        if seq.sampler is not None:
            llama_cpp.llama_sampler_free(seq.sampler)
            seq.sampler = None
        if seq.media is not None:
            seq.media.release()
            seq.media = None
        self._slot_table.release(seq.slot)

    # --- stepping -----------------------------------------------------------------------------
    def step(self, seqs: list[Sequence]) -> list[GenerationChunk | BaseException | None]:
        """One decode for all `seqs`; returns each one's chunk (None while its prompt is still being read), or the
        error that ended it (an image that failed to evaluate ends only its own sequence)."""
        failed: dict[int, BaseException] = {}
        for seq in seqs:
            if seq.pending and seq.pending[0] < 0:
                try:
                    self._evaluate_image(seq)
                except GenerationFailed as exc:
                    self._forget(seq)
                    failed[id(seq)] = exc
        live = [s for s in seqs if id(s) not in failed]
        batch = self._batch
        n = 0
        # In seq-id order: llama.cpp reuses the previous step's compute graph only when the batch's sequences come in
        # the same order as its streams; any other order rebuilds the graph on every step.
        decoding = sorted((s for s in live if not s.pending), key=lambda s: s.slot.seq_id)
        speculator = self._speculator
        if speculator is not None:
            speculator.propose(decoding, self._batch_capacity - len(decoding))
        for seq in decoding:
            self._put(batch, n, seq.next_token, len(seq.slot.cached), seq.slot.seq_id, True)
            seq.slot.cached.append(seq.next_token)
            seq.logits_index = n
            n += 1
            if speculator is not None:
                n = speculator.put_drafts(seq, batch, n)
        prompt_tokens = 0
        for seq in live:
            if not seq.pending or n >= self._batch_capacity:
                continue
            if prompt_tokens >= self._prefill_group:
                break  # later prompts start in the next steps (CPU_PREFILL_GROUP_TOKENS)
            take = _text_run(seq.pending, self._batch_capacity - n)
            prompt_tokens += len(take)
            del seq.pending[: len(take)]
            pos = len(seq.slot.cached)
            for i, token in enumerate(take):
                self._put(batch, n, token, pos + i, seq.slot.seq_id, False)
                n += 1
            seq.slot.cached.extend(take)
            if not seq.pending:
                batch.logits[n - 1] = 1
                seq.logits_index = n - 1
            else:
                seq.logits_index = -1
        batch.n_tokens = n
        started = time.perf_counter()
        status = llama_cpp.llama_decode(self._ctx, batch) if n else 0
        if n - len(decoding) >= 8:
            # Mostly prompt tokens: the slot table weighs evaluating a prefix against copying it from a slot.
            self._slot_table.note_evaluation(n, time.perf_counter() - started)
        if status != 0:
            for seq in live:
                self._forget(seq)
            raise GenerationFailed(f"llama_decode failed with status {status}")
        return [failed.get(id(seq)) or (self._sample_next(seq) if seq.logits_index >= 0 else None) for seq in seqs]

    def _sample_next(self, seq: Sequence) -> GenerationChunk | BaseException:
        if seq.drafting is None:
            return self._sample_or_fail(seq)
        # Speculating: the next token, then one more per draft the model agrees with (llama_speculative.py).
        return seq.drafting.take(seq, self._sample_or_fail, llama_cpp.llama_get_memory(self._ctx))

    def _evaluate_image(self, seq: Sequence) -> None:
        """Evaluate the image at the head of `seq.pending`, whose text before it is already in the cache."""
        assert self.vision is not None and seq.media is not None and seq.media.images
        image = seq.media.images.popleft()
        n_past = len(seq.slot.cached)
        new_n_past = self.vision.evaluate(self._ctx, image, n_past, seq.slot.seq_id, self._batch_capacity)
        if new_n_past - n_past != image.n_pos:
            raise GenerationFailed(f"an image took {new_n_past - n_past} positions instead of {image.n_pos}")
        seq.slot.cached.extend(seq.pending[: image.n_pos])
        del seq.pending[: image.n_pos]
        seq.logits_index = -1

    @staticmethod
    def _put(batch: Any, i: int, token: int, pos: int, seq_id: int, logits: bool) -> None:
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq_id
        batch.logits[i] = logits

    def _forget(self, seq: Sequence) -> None:
        """After a failed decode the slot's cache state is unknown: clear it."""
        self._slot_table.clear(seq.slot)

    def _sample_or_fail(self, seq: Sequence) -> GenerationChunk | BaseException:
        """The sequence's next chunk; a constraint that leaves no token ends only this sequence, with an error."""
        try:
            return self._sample(seq)
        except GenerationFailed as exc:
            seq.done = True
            return exc

    def _sample(self, seq: Sequence) -> GenerationChunk:
        gate = seq.gate
        forced = gate.forced_token() if gate is not None else None
        constrained = seq.mask is not None and not (gate is not None and gate.defers_constraint)
        raw: Distribution | None = None
        logits: np.ndarray[Any, np.dtype[np.float32]] | None = None
        # The logits are read back only when something needs them: the sampler chain's path stays in C.
        if constrained or forced is not None or seq.logprobs is not None or seq.greedy is not None:
            pointer = llama_cpp.llama_get_logits_ith(self._ctx, seq.logits_index)
            logits = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))
            if seq.logprobs is not None:
                # Before any mask: the model's own distribution (backends/logprobs.py); a copy only when the mask,
                # a forced token or the greedy pick's logit bias will write into llama.cpp's buffer.
                writes = constrained or forced is not None or (seq.greedy is not None and seq.greedy.tokens is not None)
                raw = Distribution(logits.copy() if writes else logits)
            if constrained:
                assert seq.mask is not None
                seq.mask.apply(logits)
            if forced is not None and np.isfinite(logits[forced]):
                # Closing the reasoning: the forced token is the only one the sampler chain can pick.
                logits[:] = -np.inf
                logits[forced] = 0.0
        if seq.greedy is not None and logits is not None:
            token = seq.greedy.pick(logits)
        else:
            token = int(llama_cpp.llama_sampler_sample(seq.sampler, self._ctx, seq.logits_index))
        if not seq.output and seq.first_token_at == 0.0:
            seq.first_token_at = time.perf_counter()
        if token in self.eog_ids:
            return self._finish(seq, FinishReason.STOP, "")
        if constrained:
            assert seq.mask is not None
            seq.mask.accept(token)
        if gate is not None:
            gate.accept(token, self.special_piece(token))
        seq.output.append(token)
        seq.next_token = token
        text = seq.stops.feed(seq.assembler.feed(self.piece(token)))
        if seq.stops.stopped or (constrained and seq.mask is not None and seq.mask.finished):
            # A complete grammar allows only the end: finish now rather than spend a step on sampling it.
            chunk = self._finish(seq, FinishReason.STOP, text)
        elif len(seq.output) >= seq.budget:
            tail = seq.stops.feed(seq.assembler.flush()) + seq.stops.flush()
            chunk = self._finish(seq, FinishReason.STOP if seq.stops.stopped else FinishReason.LENGTH, text + tail)
        else:
            chunk = GenerationChunk(text, token_count=1)
        chunk.token_ids.append(token)
        if raw is not None and seq.logprobs is not None:
            chunk.logprobs.append(describe(raw, token, seq.logprobs, self.special_piece))
        if len(seq.output) == 1:
            chunk.reasoning_open = seq.reasoning_open
        return chunk

    def _finish(self, seq: Sequence, reason: FinishReason, text: str) -> GenerationChunk:
        if reason is FinishReason.STOP and not seq.stops.stopped:
            text += seq.stops.feed(seq.assembler.flush()) + seq.stops.flush()
        seq.done = True
        ended = time.perf_counter()
        first = seq.first_token_at or ended
        stats = GenerationStats(
            prompt_tokens=seq.prompt_tokens or len(seq.prompt),
            completion_tokens=len(seq.output),
            cached_prompt_tokens=seq.cached_tokens,
            prompt_eval_seconds=first - seq.started,
            generation_seconds=ended - first,
        )
        context = seq.prompt + seq.output if seq.return_tokens else None
        matched = seq.stops.matched if reason is FinishReason.STOP else None
        return GenerationChunk(
            text, token_count=1, finish_reason=reason, stats=stats, context_tokens=context, stop_sequence=matched
        )


def _text_run(pending: list[int], limit: int) -> list[int]:
    """Up to `limit` leading tokens of `pending`, stopping before an image (evaluated on its own next step)."""
    run = pending[:limit]
    for i, token in enumerate(run):
        if token < 0:
            return run[:i]
    return run
