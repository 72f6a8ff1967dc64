"""`heylookllm import` and `heylookllm models`: turn folders of model files and the Hugging Face cache into a
models.yaml, and list or check an existing one.

Modules, from the files up:
  detect.py    what one GGUF file or one folder is, read from its content
  scan.py      walk folders, group split shards, pair projectors, drop duplicates
  hf_cache.py  the Hugging Face cache, read with huggingface_hub's own cache scan
  naming.py    readable, unique model ids
  overrides.py --override KEY=VALUE, typed and checked against the registry schema
  profiles.py  the profiles and the precedence detected < profile < override
  memory.py    weights + KV cache estimates, and whether the largest models fit
  writer.py    the YAML file: new, or merged into an existing one keeping its comments
  manage.py    `models list` and `models validate`
  report.py    progress bars and tables (rich)
  commands.py  the command-line functions cli.py calls
"""
