"""orbax checkpoints of training runs: train state + data position, resume and `init_from`.

A checkpoint is one step directory `<directory>/<step>/` with two items:

- `state`: the whole `TrainState` (params, EMA, optimizer moments, step, rng, non-finite
  counter), written by every process, each its own shards;
- `data`:  the data iterator's `state()` (JSON), so a resumed run neither replays nor skips.

orbax writes into a temporary directory and renames it when complete (atomic commit), keeps
the newest `ckpt.keep` plus every `ckpt.keep_period`-th step, and with `ckpt.async_save`
writes in a background thread after a blocking device-to-host copy.

Before any restore the stored shapes are compared with the expected ones, so a checkpoint
from another model size fails with the parameter path and both shapes rather than orbax's
anonymous "Requested shape ... is not compatible".
"""

from collections.abc import Callable
from typing import Any

import jax
import orbax.checkpoint as ocp
from etils import epath

from vlaw.train.optim import path_name

STATE, DATA = "state", "data"


class CheckpointMismatchError(ValueError):
    """A checkpoint's tree does not match the model being trained (names paths and shapes)."""


def make_manager(directory: str | epath.Path, ckpt_config: Any) -> ocp.CheckpointManager:
    """The run's CheckpointManager over `directory` (created if missing)."""
    keep_period = int(ckpt_config.get("keep_period", 0) or 0)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=int(ckpt_config.keep),
        keep_period=keep_period or None,
        enable_async_checkpointing=bool(ckpt_config.async_save),
        # The trainer decides when to save (every N steps, at the end, on SIGTERM).
        save_interval_steps=1,
        create=True,
        # A save killed mid-write (SIGKILL, preemption) leaves `<step>.orbax-checkpoint-tmp-*`;
        # the next run removes it rather than carrying it forever.
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(
        epath.Path(directory),
        item_handlers={STATE: ocp.StandardCheckpointHandler(), DATA: ocp.JsonCheckpointHandler()},
        options=options,
    )


def save(manager: ocp.CheckpointManager, step: int, state: Any, data_state: Any) -> None:
    """Starts saving `state` and the iterator position as checkpoint `step`.

    Returns after the device-to-host copy, so the caller may donate `state`'s buffers to the
    next step; the file writes finish in the background (`manager.wait_until_finished()`).
    """
    manager.save(
        step,
        args=ocp.args.Composite(
            **{STATE: ocp.args.StandardSave(state), DATA: ocp.args.JsonSave(data_state)}
        ),
        force=True,
    )


def _shapes(tree: Any, is_leaf: Any = None) -> dict[str, tuple[int, ...]]:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree, is_leaf=is_leaf)
    return {path_name(path): tuple(leaf.shape) for path, leaf in leaves}


def check_compatible(stored: Any, expected: Any, where: str) -> None:
    """Raises CheckpointMismatchError listing every path missing, unexpected or mis-shaped.

    `stored` is orbax's metadata tree (ArrayMetadata leaves), `expected` an abstract tree.
    """
    have = _shapes(stored, is_leaf=lambda x: hasattr(x, "shape"))
    want = _shapes(expected)
    problems = [
        f"  {p}: checkpoint has {have[p]}, model expects {want[p]}"
        for p in want
        if p in have and have[p] != want[p]
    ]
    problems += [
        f"  {p}: missing from the checkpoint (model expects {want[p]})"
        for p in want
        if p not in have
    ]
    problems += [
        f"  {p}: in the checkpoint {have[p]} but not in the model" for p in have if p not in want
    ]
    if problems:
        shown = "\n".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise CheckpointMismatchError(
            f"{where} does not match the model ({len(problems)} problems):\n{shown}{more}"
        )


def restore(manager: ocp.CheckpointManager, step: int, abstract_state: Any) -> tuple[Any, Any]:
    """(state, data_state) of checkpoint `step`, each array placed as in `abstract_state`.

    `abstract_state` holds `jax.ShapeDtypeStruct`s with shardings, so every process reads only
    its own shards straight onto its devices.
    """
    metadata = manager.item_metadata(step)[STATE]
    stored = metadata.tree if hasattr(metadata, "tree") else metadata
    check_compatible(stored, abstract_state, f"checkpoint {manager.directory / str(step)}")
    restored = manager.restore(
        step,
        args=ocp.args.Composite(
            **{STATE: ocp.args.StandardRestore(abstract_state), DATA: ocp.args.JsonRestore()}
        ),
    )
    return restored[STATE], restored[DATA]


def restore_params(
    directory: str | epath.Path, abstract_params: Any, *, key: str = "params"
) -> Any:
    """Only the `params` of the newest checkpoint under `directory` (for `train.init_from`), or
    with `key="ema_params"` their moving average (a run trained with `ema_decay` > 0).

    `directory` is another vlaw run's checkpoint directory; its optimizer state, step and data
    position are ignored: importing weights is not resuming. External checkpoints (openpi,
    Ctrl-World, Hugging Face) go through `vlaw/convert` into a params tree instead.
    """
    manager = ocp.CheckpointManager(
        epath.Path(directory),
        item_handlers={STATE: ocp.PyTreeCheckpointHandler()},
        options=ocp.CheckpointManagerOptions(read_only=True),
    )
    try:
        step = manager.latest_step()
        if step is None:
            raise FileNotFoundError(f"init_from: no checkpoint under {directory}")
        metadata = manager.item_metadata(step)[STATE]
        stored = metadata.tree if hasattr(metadata, "tree") else metadata
        if not isinstance(stored, dict) or stored.get(key) is None:
            raise CheckpointMismatchError(f"init_from: {directory}/{step} holds no {key!r}")
        where = f"init_from checkpoint {directory}/{step}"
        check_compatible({key: stored[key]}, {key: abstract_params}, where)
        item = {key: abstract_params}
        restored = manager.restore(
            step,
            args=ocp.args.Composite(
                **{
                    STATE: ocp.args.PyTreeRestore(
                        item=item,
                        restore_args=ocp.checkpoint_utils.construct_restore_args(item),
                        partial_restore=True,  # skip the optimizer state, step and rng
                    )
                }
            ),
        )
    finally:
        manager.close()
    return restored[STATE][key]


def latest_step(directory: str | epath.Path) -> int | None:
    """The newest committed step under `directory`, or None (also for a missing directory).

    orbax commits a step by renaming `<step>.orbax-checkpoint-tmp-*` to `<step>`, so only
    directories named by a bare number count: an interrupted save is not a checkpoint.
    """
    directory = epath.Path(directory)
    if not directory.is_dir():
        return None
    steps = [int(p.name) for p in directory.iterdir() if p.name.isdigit() and p.is_dir()]
    return max(steps) if steps else None


def save_params(directory: str | epath.Path, step: int, params: Any, ckpt_config: Any) -> None:
    """Writes `params` alone as checkpoint `step` under `directory`, in the layout the trainer
    writes (`restore_params` and the runtime modules' loaders read it). For a model made
    without the trainer: an imported or hand-built one, a test's."""
    manager = make_manager(directory, ckpt_config)
    try:
        save(manager, step, {"params": params}, {})
        manager.wait_until_finished()
    finally:
        manager.close()


def restore_on_one_device(
    directory: str | epath.Path, abstract_params: Any, *, key: str = "params"
) -> Any:
    """`restore_params` onto the first local device: what inference (a policy acting, a world
    model imagining, a reward model scoring) loads. `abstract_params` gives shapes and dtypes
    (ShapeDtypeStruct or array leaves)."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    target = jax.tree.map(
        lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device), abstract_params
    )
    return restore_params(directory, target, key=key)


def params_loader(directory: str | epath.Path, *, key: str = "params") -> Callable[[Any], Any]:
    """`trainer.train(initial_params=...)` for a vlaw run's checkpoint directory (`init_from`).

    The trainer calls it with the abstract, sharded parameter tree when there is no checkpoint
    to resume; it then reads `directory`'s newest `key` tree straight into those shardings.
    """
    return lambda target: restore_params(directory, target, key=key)
