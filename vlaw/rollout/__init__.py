"""Rollout machinery, no phases: the Station protocol (station.py), rollouts recorded on
stations and their staging (episodes.py), the imagination loop (imagine.py, imagine_plan.py)
and the simulator replay of imagined actions (replay.py)."""
