"""Flax Linen models: pi0.5 (policy/), Ctrl-World (world_model/), Qwen3-VL (reward/)."""
