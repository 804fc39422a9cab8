"""Evaluation: the world model's held-out prediction check (prediction.py) and confusion
matrices of success decisions (confusion.py)."""
