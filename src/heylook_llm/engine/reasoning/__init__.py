"""Reasoning models: formats (formats.py), streaming splitters (split.py), and the engine stage that prepares a
request and parses its output (stage.py). docs/reasoning.md describes the behaviour."""
