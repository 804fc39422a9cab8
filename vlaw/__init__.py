"""vlaw: iterative co-improvement of a VLA policy and an action-conditioned world model (VLAW).

Import what you need from the subpackages (`vlaw.losses`, `vlaw.models`, `vlaw.data`, ...);
nothing heavy is imported here, so `import vlaw` is cheap and never imports TensorFlow.
"""

__version__ = "0.1.0"
