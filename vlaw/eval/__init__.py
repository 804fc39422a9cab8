"""Evaluation of world-model videos: frame and distribution metrics (VLAW Table 1)."""
