"""The iterator contract between data pipelines and the trainer.

A `BatchIterator` yields dicts of numpy arrays (one global-batch shard per host) and can report
and restore its position, so a resumed run neither replays nor skips data: the trainer stores
`state()` in every checkpoint and calls `restore(state)` on resume.
"""

from typing import Any, Protocol


class BatchIterator(Protocol):
    def __iter__(self) -> "BatchIterator": ...

    def __next__(self) -> dict[str, Any]: ...

    def state(self) -> dict[str, Any]:
        """A JSON-serialisable description of the position (e.g. {"seed": 0, "batches": 12})."""
        ...

    def restore(self, state: dict[str, Any]) -> None:
        """Moves to the position `state()` described; the next batch is the one after it."""
        ...
