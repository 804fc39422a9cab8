"""Device mesh, logical-axis sharding rules and host-to-global batch transfer.

Parallelism is configuration (STYLE.md): `config.mesh` names the sizes of three mesh axes,

- `data`:   pure data parallelism (parameters replicated along it),
- `fsdp`:   data parallelism whose parameters and optimizer moments are sharded along it,
- `tensor`: tensor (model) parallelism of wide matrices (mlp, heads, vocab),

with -1 meaning "the devices left over". Models only speak logical axis names
(`nn.with_logical_partitioning(init, ("embed", "mlp"))`); the rules of `config.mesh.rules`
map them to mesh axes here, so no model knows a device count. For each dimension the first
rule whose mesh axes are still unused in that array and divide the dimension wins; otherwise
the dimension is replicated. Names no rule lists are replicated.
"""

import logging
import math
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from vlaw import config as vlaw_config

MESH_AXES = ("data", "fsdp", "tensor")
# The batch dimension is split over every data-parallel axis: FSDP is data parallelism too.
BATCH_AXES = ("data", "fsdp")

# The production rules are config (`config.mesh.rules`, defined in vlaw/config.py), so a run can
# change them with `--config.mesh.rules=...`; the default of the functions below is the same tuple.
LOGICAL_AXIS_RULES = vlaw_config.LOGICAL_AXIS_RULES

# Arrays with fewer elements than this stay replicated when no logical name shards them:
# biases and norm scales cost more in collectives than they save in memory.
MIN_FSDP_ELEMENTS = 2**14

Rules = Sequence[tuple[str, str | tuple[str, ...] | None]]


def rules_from_config(mesh_config: Any) -> tuple[tuple[str, tuple[str, ...] | None], ...]:
    """`config.mesh.rules`, checked: (logical name, mesh axis | tuple of mesh axes | None) pairs.

    Accepts lists for tuples (a config read back from JSON). A misspelt mesh axis or a rule that
    is not a pair raises here, naming the rule, rather than silently replicating a dimension.
    """
    if "rules" not in mesh_config:
        raise ValueError("config.mesh.rules is missing: the logical-axis rules are config")
    checked = []
    for index, rule in enumerate(mesh_config["rules"]):
        where = f"config.mesh.rules[{index}] = {rule!r}"
        if not isinstance(rule, (tuple, list)) or len(rule) != 2 or not isinstance(rule[0], str):
            raise ValueError(f"{where}: each rule is a (logical name, mesh axes or None) pair")
        name, axes = rule
        if axes is not None:
            axes = (axes,) if isinstance(axes, str) else tuple(axes)
            unknown = [a for a in axes if a not in MESH_AXES]
            if unknown or not axes:
                raise ValueError(
                    f"{where}: {unknown or axes} names no mesh axis; use axes of {MESH_AXES}, "
                    "a tuple of them, or None (keep the dimension whole)"
                )
        checked.append((name, axes))
    return tuple(checked)


def maybe_initialize_distributed(mesh_config: Any) -> None:
    """Joins the multi-host job when `config.mesh.distributed` is set (before any jax call).

    launch.py calls it once, before running a phase; the trainer assumes it was done.

    On TPU pods, SLURM and Kubernetes jobs JAX finds the coordinator itself; elsewhere set
    JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID.
    """
    if mesh_config.get("distributed", False) and not jax.distributed.is_initialized():
        jax.distributed.initialize()
        logging.info(
            "process %d of %d, %d local / %d global devices",
            jax.process_index(),
            jax.process_count(),
            jax.local_device_count(),
            jax.device_count(),
        )


def resolve_mesh_shape(mesh_config: Any, num_devices: int) -> tuple[int, int, int]:
    """(data, fsdp, tensor) sizes with the single -1 replaced by the devices left over."""
    sizes = [int(mesh_config.get(axis, 1)) for axis in MESH_AXES]
    if sizes.count(-1) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {dict(zip(MESH_AXES, sizes))}")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ValueError(
                f"{num_devices} devices cannot fill mesh {dict(zip(MESH_AXES, sizes))}: "
                f"{num_devices} is not a multiple of {known}"
            )
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) != num_devices:
        raise ValueError(
            f"mesh {dict(zip(MESH_AXES, sizes))} needs {math.prod(sizes)} devices, "
            f"{num_devices} available"
        )
    return tuple(sizes)


def create_mesh(mesh_config: Any, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """The ("data", "fsdp", "tensor") mesh over `devices` (default: all devices).

    Axis types are `Auto`: shardings come from jit's in/out_shardings and the compiler
    propagates them, rather than being part of every array's type.
    """
    devices = list(jax.devices() if devices is None else devices)
    shape = resolve_mesh_shape(mesh_config, len(devices))
    # make_mesh orders devices so the innermost axes (tensor, then fsdp) get the fastest links.
    return jax.make_mesh(shape, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def _as_axes(axes: str | tuple[str, ...] | None) -> tuple[str, ...]:
    if axes is None:
        return ()
    return (axes,) if isinstance(axes, str) else tuple(axes)


def spec_for(
    shape: Sequence[int],
    names: Sequence[str | None] | None,
    mesh: Mesh,
    rules: Rules = LOGICAL_AXIS_RULES,
    *,
    logical: bool = True,
    min_fsdp_elements: int = MIN_FSDP_ELEMENTS,
) -> P:
    """The PartitionSpec of one array of `shape` whose dimensions carry `names`.

    `logical=False` means `names` are mesh axes already (`nn.with_partitioning`). A dimension
    is only sharded over axes whose size product divides it, so any mesh works for any model
    (uneven sharding would pad silently). Large arrays that the names left unsharded over
    `fsdp` get their largest divisible free dimension sharded over it: FSDP by default.
    """
    sizes = dict(mesh.shape)
    used: set[str] = set()
    spec: list[tuple[str, ...]] = [() for _ in shape]
    for dim, name in enumerate(names or ()):
        if name is None:
            continue
        candidates = [axes for rule_name, axes in rules if rule_name == name] if logical else [name]
        for axes in map(_as_axes, candidates):
            if not axes:
                break  # an explicit None rule: keep this dimension whole
            axes = tuple(a for a in axes if sizes.get(a, 1) > 1)
            # Size-1 axes shard nothing: fall through to the next rule (e.g. "mlp" takes
            # "fsdp" when there is no tensor parallelism).
            if not axes or used & set(axes) or shape[dim] % math.prod(sizes[a] for a in axes):
                continue
            spec[dim] = axes
            used |= set(axes)
            break
    fsdp = sizes.get("fsdp", 1)
    if fsdp > 1 and "fsdp" not in used and math.prod(shape) >= min_fsdp_elements:
        free = [d for d in range(len(shape)) if not spec[d] and shape[d] % fsdp == 0]
        if free:
            dim = max(free, key=lambda d: shape[d])
            spec[dim] = ("fsdp",)
    while spec and not spec[-1]:
        spec.pop()  # P("fsdp") rather than P("fsdp", None): the same sharding, easier to read
    return P(*(None if not a else a[0] if len(a) == 1 else a for a in spec))


def _is_box(x: Any) -> bool:
    return isinstance(x, nn.Partitioned)


def param_shardings(abstract_params: Any, mesh: Mesh, rules: Rules = LOGICAL_AXIS_RULES) -> Any:
    """NamedShardings for a (possibly boxed) abstract parameter tree, in the unboxed structure.

    `nn.LogicallyPartitioned` boxes are mapped through `rules`; plain `nn.Partitioned` boxes
    name mesh axes directly; unboxed leaves get the FSDP default of `spec_for`.
    """

    def one(leaf: Any) -> NamedSharding:
        if _is_box(leaf):
            logical = isinstance(leaf, nn.LogicallyPartitioned)
            spec = spec_for(leaf.value.shape, leaf.names, mesh, rules, logical=logical)
        else:
            spec = spec_for(np.shape(leaf), None, mesh, rules)
        return NamedSharding(mesh, spec)

    return jax.tree.map(one, abstract_params, is_leaf=_is_box)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) dimension split over ("data", "fsdp"); the rest replicated."""
    return NamedSharding(mesh, P(BATCH_AXES))


def make_global_batch(local_batch: dict[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
    """This host's numpy batch -> global jax.Arrays sharded over the batch axes.

    Each host passes its own rows (leading dimension = global batch / process count); the
    transfer is explicit, so it is allowed under `jax.transfer_guard("disallow")`.
    """
    sharding = batch_sharding(mesh)
    # Rows each host must hold: the batch axes' devices on this host (1 host: all of them).
    batch_devices = math.prod(mesh.shape[a] for a in BATCH_AXES)
    per_host = max(1, batch_devices // jax.process_count())

    def one(path: Any, x: Any) -> jax.Array:
        x = np.asarray(x)
        if x.dtype.kind in "OSUV":
            raise TypeError(
                f"batch field {jax.tree_util.keystr(path)} holds {x.dtype} (strings or bytes), "
                "which devices cannot hold: tokenize, decode or drop it on the host first"
            )
        if x.ndim == 0 or x.shape[0] % per_host:
            raise ValueError(
                f"batch field {jax.tree_util.keystr(path)} has shape {x.shape}: its leading "
                f"(batch) dimension must be a multiple of {per_host}, the data-parallel devices "
                f"of this host (mesh {dict(mesh.shape)})"
            )
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree_util.tree_map_with_path(one, local_batch)


def rows_mesh(batch_size: int, devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D ("data",) mesh over as many of this process's devices as evenly split a batch of
    `batch_size` independent rows (imagined rollouts, scored episodes): each device computes
    its rows, the model replicated (one device when the batch is odd, or there is one)."""
    devices = list(jax.local_devices() if devices is None else devices)
    count = max(n for n in range(1, len(devices) + 1) if batch_size % n == 0)
    return Mesh(np.asarray(devices[:count]), ("data",))
