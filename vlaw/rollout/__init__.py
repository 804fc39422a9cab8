"""Rollouts: the Station protocol (station.py) and recorded rollouts on stations (real.py)."""
