"""The HTTP layer: the FastAPI app and one package per API dialect."""
