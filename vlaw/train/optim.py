"""The optimizer shared by the three trainers: AdamW, warmup-cosine, global-norm clipping.

Master parameters and Adam moments live in `train.param_dtype` (float32 by default); models
compute in `train.compute_dtype` by casting a copy of the parameters inside the loss
(`cast_for_compute`), so gradients and updates reach the float32 masters unrounded.
"""

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

# A trainable spec: None (everything trains), a pytree of bools shaped like the params, or a
# predicate on ("a/b/kernel", leaf) -> bool (the trainer passes abstract ShapeDtypeStruct leaves).
Trainable = None | Any | Callable[[str, Any], bool]


def learning_rate_schedule(train_config: Any) -> optax.Schedule:
    """Linear warmup from 0 to `learning_rate`, then cosine decay to 10% of it at `steps`."""
    steps = int(train_config.steps)
    warmup = min(int(train_config.warmup_steps), max(steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0,
        peak_value=float(train_config.learning_rate),
        warmup_steps=warmup,
        decay_steps=max(steps, warmup + 1),
        end_value=0.1 * float(train_config.learning_rate),
    )


def path_name(path: tuple[Any, ...]) -> str:
    """A key path as "a/b/kernel", the form used in masks and error messages."""
    parts = []
    for key in path:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                parts.append(str(getattr(key, attr)))
                break
        else:
            parts.append(str(key))
    return "/".join(parts)


def trainable_mask(params: Any, trainable: Trainable) -> Any | None:
    """Resolves `trainable` to a pytree of Python bools shaped like `params` (None: all)."""
    if trainable is None:
        return None
    if callable(trainable):
        return jax.tree_util.tree_map_with_path(
            lambda path, leaf: bool(trainable(path_name(path), leaf)), params
        )
    return jax.tree.map(bool, trainable)


def _clipped_adamw(train_config: Any) -> optax.GradientTransformation:
    """Clip by global norm, then AdamW with moments in `train.param_dtype`."""
    return optax.chain(
        optax.clip_by_global_norm(float(train_config.grad_clip_norm)),
        optax.adamw(
            learning_rate_schedule(train_config),
            weight_decay=float(train_config.weight_decay),
            mu_dtype=jnp.dtype(train_config.param_dtype),
        ),
    )


def make_optimizer(train_config: Any, mask: Any | None = None) -> optax.GradientTransformation:
    """Clip by global norm, then AdamW; frozen leaves (mask False) get zero updates.

    Frozen leaves get no Adam moments either (`optax.multi_transform`), so a frozen vision
    encoder costs no optimizer memory, and their gradients are left out of the clipping norm.
    """
    tx = _clipped_adamw(train_config)
    if mask is None:
        return tx
    labels = jax.tree.map(lambda t: "train" if t else "frozen", mask)
    return optax.multi_transform({"train": tx, "frozen": optax.set_to_zero()}, labels)


def map_optimizer_state(
    train_config: Any,
    mask: Any | None,
    opt_state: Any,
    per_param: Any,
    non_param: Callable[[Any], Any],
) -> Any:
    """`opt_state` (of `make_optimizer(train_config, mask)`) with its leaves replaced.

    Every leaf of a parameter-shaped part (Adam's moments) becomes the leaf of `per_param` (a
    tree shaped like the parameters, e.g. their shardings) at the same parameter path; every
    other leaf (counts) becomes `non_param(leaf)`. The parameter-shaped parts are found by
    `optax.tree_map_params`, i.e. by optax itself, not by matching names or shapes. Under a
    mask it is applied to the trainable group, whose trees hold `MaskedNode`s where frozen
    parameters are.
    """

    def over(state: Any, values: Any) -> Any:
        return optax.tree_map_params(
            _clipped_adamw(train_config),
            lambda _, value: value,
            state,
            values,
            transform_non_params=lambda leaf: jax.tree.map(non_param, leaf),
        )

    if mask is None:
        return over(opt_state, per_param)
    # multi_transform's state: {"train": MaskedState(AdamW state of the trainable leaves),
    # "frozen": MaskedState(set_to_zero's empty state)}.
    groups = dict(opt_state.inner_states)
    trainable = jax.tree.map(lambda value, t: value if t else optax.MaskedNode(), per_param, mask)
    train = groups["train"]
    groups["train"] = train._replace(inner_state=over(train.inner_state, trainable))
    groups["frozen"] = jax.tree.map(non_param, groups["frozen"])
    return opt_state._replace(inner_states=groups)


def cast_floating(tree: Any, dtype: Any) -> Any:
    """Casts the floating-point leaves of `tree` to `dtype`; integer leaves are left alone."""
    dtype = jnp.dtype(dtype)

    def one(x: Any) -> Any:
        return x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x

    return jax.tree.map(one, tree)


def cast_for_compute(params: Any, compute_dtype: Any) -> Any:
    """Parameters for the forward pass: bf16 compute on float32 masters.

    Call it inside the loss; the cast is differentiable, so gradients come back in the
    masters' dtype.
    """
    return cast_floating(params, compute_dtype)


def ema_update(ema_params: Any, params: Any, decay: float) -> Any:
    """Exponential moving average of parameters, in the masters' dtype."""
    return jax.tree.map(
        lambda e, p: (decay * e + (1.0 - decay) * p).astype(e.dtype), ema_params, params
    )
