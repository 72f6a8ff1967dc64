"""The demo models' tokenizer: byte-level BPE trained with `tokenizers` on a fixed corpus, and its special tokens.

Every demo model (GGUF and MLX, text and vision) shares this vocabulary and the ChatML chat template, so the
same prompt gives the same token ids everywhere. Training is deterministic: the same vocabulary size gives the
same tokens and merges.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
HERMES_TOOLS_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n"
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}\n\n{% endif %}"
    "# Tools\n\nYou may call one or more functions. Their signatures, within <tools></tools>:\n<tools>\n"
    "{% for tool in tools %}{{ tool | tojson }}\n{% endfor %}</tools>\n\n"
    "For each call, write a JSON object with the function name and arguments within <tool_call></tool_call>:\n"
    '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call><|im_end|>\n'
    "{% elif messages[0].role == 'system' %}<|im_start|>system\n{{ messages[0].content }}<|im_end|>\n{% endif %}"
    "{% for message in messages %}"
    "{% if message.role == 'system' and loop.first %}"
    "{% elif message.role == 'assistant' %}<|im_start|>assistant\n{{ message.content }}"
    "{% for call in message.tool_calls or [] %}\n<tool_call>\n"
    '{"name": "{{ call.function.name }}", "arguments": {{ call.function.arguments | tojson }}}\n</tool_call>'
    "{% endfor %}<|im_end|>\n"
    "{% elif message.role == 'tool' %}<|im_start|>user\n<tool_response>\n{{ message.content }}\n</tool_response>"
    "<|im_end|>\n"
    "{% else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
"""ChatML with Hermes/Qwen-style tool calls (`<tool_call>` blocks): the demo tool models' template."""
THINK_TEMPLATE = (
    "{% set ns = namespace(last_user=-1) %}"
    "{% for message in messages %}{% if message.role == 'user' %}{% set ns.last_user = loop.index0 %}{% endif %}"
    "{% endfor %}"
    "{% if reasoning_effort is defined %}<|im_start|>system\nReasoning effort: {{ reasoning_effort }}<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if message.role == 'assistant' %}<|im_start|>assistant\n"
    "{% if message.reasoning_content and loop.index0 > ns.last_user %}"
    "<think>\n{{ message.reasoning_content }}\n</think>\n\n{% endif %}"
    "{{ message.content }}<|im_end|>\n"
    "{% else %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n"
    "{% else %}<think>\n{% endif %}{% endif %}"
)
"""ChatML with a think section, as DeepSeek-R1's and Qwen3's templates write it: the generation prompt opens
`<think>` (so even random weights start by reasoning), `enable_thinking` false writes an empty section instead,
`reasoning_effort` goes into a system line, and earlier turns' reasoning is dropped (kept only for assistant turns
after the last user message, as between tool calls): the demo reasoning models' template."""
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
EOS_TOKEN = "<|im_end|>"
BOS_TOKEN = "<|endoftext|>"

_WORDS = (
    "the a local model server runs on your own machine and answers every client that speaks the openai or "
    "ollama api tokens stream back as they are made while the router keeps a few models loaded and swaps "
    "them when asked small tests check structure counts stop strings and seeds because random weights write "
    "gibberish quick brown fox jumps over lazy dog hello world chat user assistant system prompt answer "
    "question image vision embed vector cache batch queue thread worker llama mlx gguf yaml python"
).split()


@dataclass(slots=True)
class TrainedTokenizer:
    tokenizer_json: str
    tokens: list[str]
    merges: list[str]

    def token_id(self, token: str) -> int:
        return self.tokens.index(token)


def _corpus() -> list[str]:
    rng = random.Random(1234)
    lines = []
    for _ in range(400):
        lines.append(" ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 16))).capitalize() + ".")
    lines.append("0123456789 +-*/=()[]{}<>,.;:!?'\"` ~@#$%^&_|\\")
    return lines


def train_tokenizer(vocab_size: int) -> TrainedTokenizer:
    """A byte-level BPE tokenizer (GPT-2 pre-tokenization), trained on a fixed corpus: deterministic."""
    # Imported here, not at the top: the server imports this package at start-up only to check whether the
    # demo models on disk are current, and that check should not pay for loading `tokenizers`.
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    data = json.loads(tok.to_str())
    vocab: dict[str, int] = data["model"]["vocab"]
    tokens = [t for t, _ in sorted(vocab.items(), key=lambda item: item[1])]
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"]["merges"]]
    return TrainedTokenizer(tok.to_str(), tokens, merges)
