"""Importers of external checkpoints (openpi, transformers, Ctrl-World, ...) into vlaw models."""
