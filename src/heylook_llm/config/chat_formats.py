"""Named chat templates for `chat_format` in models.yaml, for models whose GGUF carries no usable template.

Each is a Jinja template rendered with `messages`, `bos_token`, `eos_token` and `add_generation_prompt`, the
same variables Hugging Face chat templates use.
"""

from __future__ import annotations

CHAT_FORMATS: dict[str, str] = {
    "chatml": (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    "llama-2": (
        "{{ bos_token }}{% set sys = namespace(text='') %}"
        "{% for m in messages %}{% if m.role == 'system' %}{% set sys.text = m.content %}"
        "{% elif m.role == 'user' %}[INST] {% if sys.text %}<<SYS>>\n{{ sys.text }}\n<</SYS>>\n\n"
        "{% set sys.text = '' %}{% endif %}{{ m.content }} [/INST]"
        "{% else %} {{ m.content }} {{ eos_token }}{% endif %}{% endfor %}"
    ),
    "llama-3": (
        "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n"
        "{{ m.content }}<|eot_id|>{% endfor %}"
        "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
    ),
    "mistral-instruct": (
        "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' or m.role == 'system' %}"
        "[INST] {{ m.content }} [/INST]{% else %}{{ m.content }}{{ eos_token }}{% endif %}{% endfor %}"
    ),
    "gemma": (
        "{{ bos_token }}{% for m in messages %}<start_of_turn>"
        "{{ 'model' if m.role == 'assistant' else 'user' }}\n{{ m.content }}<end_of_turn>\n{% endfor %}"
        "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
    ),
    "phi-3": (
        "{% for m in messages %}<|{{ m.role }}|>\n{{ m.content }}<|end|>\n{% endfor %}"
        "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
    ),
}


TOOL_FORMATS = ("hermes", "llama3", "mistral", "mistral_args", "deepseek", "deepseek_v3_1", "harmony", "generic")
"""Tool-call syntaxes a models.yaml `tool_format` may name (engine/tool_calls/formats.py implements each)."""

REASONING_FORMATS = ("think", "harmony", "none")
"""Reasoning formats a models.yaml `reasoning_format` may name (engine/reasoning/formats.py implements each)."""
