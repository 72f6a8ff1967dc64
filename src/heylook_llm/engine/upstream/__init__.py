"""Models served by other servers (vLLM, SGLang, llama-server, Ollama, another heylookllm): requests in the
neutral types are translated to the upstream's OpenAI or Ollama API and its answers back (docs/scale-out.md).

Kept apart from the router: upstream models are never loaded, evicted or counted by the memory budget.
"""
