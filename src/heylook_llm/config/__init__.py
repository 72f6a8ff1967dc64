"""Server settings and the models.yaml registry."""
