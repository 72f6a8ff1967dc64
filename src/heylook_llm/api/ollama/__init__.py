"""The Ollama dialect: /api/chat, /api/generate, /api/embed, /api/tags, /api/show, /api/ps and the rest."""
