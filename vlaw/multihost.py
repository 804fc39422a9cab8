"""What the processes of one multi-host job agree on: which one is the chief, and barriers.

A job is joined once, by launch.py (`config.mesh.distributed`, `vlaw.train.mesh`). Every
process then runs the same phases on the same run directory (a filesystem they share). Work
that divides goes to every process (`imagine`'s batches); what touches shared files once (a
dataset, state.json, the workdir's lock) is the chief's, between barriers.

Outside a distributed job the process is the chief and barriers are no-ops, and asking starts
no JAX backend: the pipeline asks around every phase, including those that never touch a
device (on a GPU host a started backend reserves most of its memory).
"""

import jax
from jax.experimental import multihost_utils


def process_index() -> int:
    """This process's index in the job; 0 outside a distributed job."""
    return jax.process_index() if jax.distributed.is_initialized() else 0


def process_count() -> int:
    """The processes of the job; 1 outside a distributed job."""
    return jax.process_count() if jax.distributed.is_initialized() else 1


def is_chief() -> bool:
    """Process 0: the one that writes what the processes share."""
    return process_index() == 0


def barrier(name: str) -> None:
    """Returns once every process of the job has called `barrier(name)`.

    `name` is checked equal on every process (a mismatch is an error, not a silent pairing of
    two different barriers), so give each call site its own: phase, iteration, purpose. A
    collective over every device (`sync_global_devices`): a process waiting here holds its
    devices idle while the chief finishes its part.
    """
    if process_count() > 1:
        multihost_utils.sync_global_devices(name)
