"""The one training loop shared by the policy, the world model and the reward model.

    state = train(config.world_model.train, config.ckpt, config.mesh,
                  workdir=workdir / "checkpoints" / "world_model",
                  init_fn=lambda rng: model.init(rng, *dummy_inputs)["params"],
                  loss_fn=lambda params, batch, rng: (loss, metrics),
                  batches=iterator)

What happens, in order:
1. the mesh is built from `config.mesh` (launch.py has joined a multi-host job already);
2. `jax.eval_shape(init_fn)` gives the parameter tree with its logical axis names, from which
   `config.mesh.rules` give the parameter shardings (mesh.py); the optimizer moments take
   their parameter's sharding (optax finds them), scalars replicate. The state is built by a
   jit with those `out_shardings`, so no device ever holds more than its shards;
3. the newest checkpoint in `workdir` is restored if there is one (state and data position:
   exact resume; `metrics.jsonl` lines past it are dropped); otherwise `initial_params`, if
   given, supplies the parameters (the caller resolves `train.init_from`), else `init_fn`;
4. `train_step` is jitted with explicit in/out shardings and the state donated, compiled
   ahead of time on the first batch (once: a later shape change is an error, not a silent
   recompile), and run under `jax.transfer_guard("disallow")`: the only host<->device traffic
   is the explicit batch upload and the metrics fetch every `log_every_steps`;
5. non-finite updates are refused inside the step and counted; the metrics fetch raises
   `NonFiniteError` once the count passes `train.max_nonfinite_steps`, and so does the end
   of a call none of whose updates was applied;
6. checkpoints every `ckpt.save_every_steps`, at the end, and at the first step boundary after
   SIGTERM (then `Preempted` is raised; the next run with the same workdir resumes).
"""

import functools
import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from etils import epath
from jax.sharding import Mesh, NamedSharding
from tqdm import tqdm

from vlaw.train import checkpoints, optim
from vlaw.train import mesh as mesh_lib

# loss_fn(params, batch, rng) -> (scalar loss, {name: scalar metric})
LossFn = Callable[[Any, dict[str, jax.Array], jax.Array], tuple[jax.Array, dict[str, jax.Array]]]


@flax.struct.dataclass
class TrainState:
    step: jax.Array  # int32[]: batches consumed (refused updates included)
    params: Any  # master parameters in train.param_dtype, unboxed
    ema_params: Any  # same tree, or None when train.ema_decay == 0
    opt_state: Any  # optax state; moments in train.param_dtype
    rng: jax.Array  # uint32[2] raw key (raw, not typed, so orbax stores it as plain data)
    nonfinite_count: jax.Array  # int32[]: updates refused for a non-finite loss or grad norm


def read_metrics(workdir: str) -> list[dict[str, float]]:
    """The lines `train` logged to `<workdir>/metrics.jsonl`, oldest first ([] if none)."""
    path = epath.Path(workdir) / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class Preempted(RuntimeError):
    """Training stopped at a step boundary after SIGTERM (or the job's preemption notice), with
    a checkpoint of that step: the phase is not done, and rerunning the same command resumes it.
    Raised rather than returned, so that nothing after training (a phase's evaluation, the
    pipeline's record of finished phases) takes a partly trained model for a finished one."""


class NonFiniteError(FloatingPointError):
    """More than `train.max_nonfinite_steps` updates refused, or every update of a call."""


def train_step(
    state: TrainState,
    batch: dict[str, jax.Array],
    *,
    loss_fn: LossFn,
    tx: optax.GradientTransformation,
    schedule: optax.Schedule,
    ema_decay: float,
    mask: Any | None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer step; pure, so it is jitted once and its input state donated.

    A non-finite loss or gradient norm refuses the update inside the step: params, EMA and
    optimizer state stay as they were (both branches are computed and one is selected, which
    costs nothing extra on an accelerator), `nonfinite_count` grows and `step` still advances,
    because it counts batches consumed: that keeps checkpoint numbers and the data position
    in lockstep without reading the flag on the host.
    """
    rng = jax.random.fold_in(state.rng, state.step)

    def loss_of(params: Any) -> tuple[jax.Array, dict[str, jax.Array]]:
        if mask is not None:
            # Frozen leaves (e.g. a pretrained vision tower) get no weight gradient, so XLA
            # drops their backward matmuls instead of computing gradients to throw away.
            params = jax.tree.map(lambda p, t: p if t else jax.lax.stop_gradient(p), params, mask)
        return loss_fn(params, batch, rng)

    (loss, aux), grads = jax.value_and_grad(loss_of, has_aux=True)(state.params)
    grad_norm = optax.global_norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    ema_params = state.ema_params
    if ema_params is not None:
        ema_params = optim.ema_update(ema_params, params, ema_decay)

    def keep_if_finite(new: Any, old: Any) -> Any:
        return jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)

    nonfinite_count = state.nonfinite_count + jnp.where(finite, 0, 1).astype(jnp.int32)
    new_state = state.replace(
        step=state.step + 1,
        params=keep_if_finite(params, state.params),
        ema_params=keep_if_finite(ema_params, state.ema_params),
        opt_state=keep_if_finite(opt_state, state.opt_state),
        nonfinite_count=nonfinite_count,
    )
    metrics = {
        **aux,
        "loss": loss,
        "grad_norm": grad_norm,
        # Adam's count advances only on applied updates, and so does the schedule.
        "learning_rate": schedule(state.step - state.nonfinite_count),
        "update_applied": finite.astype(jnp.float32),
        "nonfinite_count": nonfinite_count,
    }
    return new_state, metrics


def _initial_state(
    init_rng: jax.Array,
    train_rng: jax.Array,
    params: Any | None,
    *,
    init_fn: Callable[[jax.Array], Any],
    tx: optax.GradientTransformation,
    param_dtype: Any,
    use_ema: bool,
) -> TrainState:
    """A fresh TrainState; `params` None means "initialise from `init_fn`"."""
    if params is None:
        params = nn.unbox(init_fn(init_rng))
    params = optim.cast_floating(params, param_dtype)
    return TrainState(
        step=jnp.zeros((), jnp.int32),
        params=params,
        # A real copy: state leaves must be distinct buffers, since the step donates them all.
        ema_params=jax.tree.map(jnp.copy, params) if use_ema else None,
        opt_state=tx.init(params),
        rng=train_rng,
        nonfinite_count=jnp.zeros((), jnp.int32),
    )


def _state_shardings(
    abstract_state: TrainState, param_sh: Any, mesh: Mesh, train_config: Any, mask: Any | None
) -> TrainState:
    """Shardings for every leaf of the state: moments follow their parameter, scalars replicate.

    optax itself says which parts of the optimizer state are parameter-shaped
    (`optim.map_optimizer_state`); any other leaf that is not a scalar is an error rather than
    a silently replicated array.
    """
    replicated = mesh_lib.replicated(mesh)

    def non_param(leaf: Any) -> NamedSharding:
        if leaf.shape:
            raise ValueError(
                f"optimizer state leaf of shape {leaf.shape} is neither parameter-shaped nor a "
                "scalar; the trainer does not know how to shard it"
            )
        return replicated

    return TrainState(
        step=replicated,
        params=param_sh,
        ema_params=None if abstract_state.ema_params is None else param_sh,
        opt_state=optim.map_optimizer_state(
            train_config, mask, abstract_state.opt_state, param_sh, non_param
        ),
        rng=replicated,
        nonfinite_count=replicated,
    )


def _place_params(params: Any, abstract: Any, shardings: Any) -> Any:
    """Imported weights (numpy or jax) -> sharded jax.Arrays, after checking their shapes.

    Host arrays are sliced per device (`make_array_from_callback`): no device ever holds a
    whole array. jax.Arrays passed in are consumed (their buffers donated to the state).
    """
    checkpoints.check_compatible(params, abstract, "initial_params (as 'checkpoint')")

    def one(x: Any, sh: NamedSharding) -> jax.Array:
        if isinstance(x, jax.Array):
            return jax.device_put(x, sh)
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sh, lambda index: x[index])

    return jax.tree.map(one, params, shardings)


class _StopOnSigterm:
    """Turns SIGTERM (preemption, `kill`) into a flag checked at step boundaries.

    Installed only from the main thread (Python delivers signals there); the previous handler
    is restored on exit, so the trainer leaves the process as it found it.
    """

    def __init__(self, install: bool = True) -> None:
        self.requested = threading.Event()
        self._install = install
        self._previous: Any = None
        self._installed = False

    def __enter__(self) -> "_StopOnSigterm":
        if self._install and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
            self._installed = True
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        logging.warning("SIGTERM: saving a checkpoint at the next step boundary, then stopping")
        self.requested.set()

    def __exit__(self, *exc: Any) -> None:
        if self._installed:
            signal.signal(signal.SIGTERM, self._previous)


def _check_batch_size(local_batch: dict[str, Any], batch_size: int) -> None:
    """Every field holds this host's share of `train.batch_size` rows (cheap: shapes only)."""
    per_host = batch_size // jax.process_count()
    for key, value in local_batch.items():
        rows = np.shape(value)[0] if np.ndim(value) else None
        if rows != per_host:
            raise ValueError(
                f"batch field {key!r} has shape {np.shape(value)}; expected {per_host} rows "
                f"(train.batch_size={batch_size} over {jax.process_count()} processes)"
            )


def _drop_metrics_after(workdir: epath.Path, step: int) -> None:
    """Rewrites `metrics.jsonl` without the lines logged after `step` (process 0, atomically).

    A run killed between two checkpoints logged steps it will train again when resumed from
    `step`; without this the file would hold them twice (and skew any summary of it).
    """
    path = workdir / "metrics.jsonl"
    if jax.process_index() != 0 or not path.exists():
        return
    lines = [line for line in path.read_text().splitlines() if line.strip()]

    def logged_by_then(line: str) -> bool:
        try:
            return json.loads(line)["step"] <= step
        except (ValueError, KeyError):
            return False  # a line torn by the kill

    kept = [line for line in lines if logged_by_then(line)]
    if len(kept) == len(lines):
        return
    temporary = workdir / "metrics.jsonl.tmp"
    temporary.write_text("".join(line + "\n" for line in kept))
    temporary.replace(path)
    logging.info("metrics.jsonl: dropped %d lines past step %d", len(lines) - len(kept), step)


class _MetricsLog:
    """Metrics of the steps since the last log: fetched together, averaged, written, shown.

    `metrics.jsonl` (process 0) gets one line per log step: means over the window, the
    non-finite counter's latest value, steps/s and examples/s (compile time excluded). The
    progress bar moves at the fetch too: it counts steps the device has finished, not steps
    dispatched ahead of it, so its rate and ETA are the device's.
    """

    def __init__(
        self, workdir: epath.Path, train_config: Any, start: int, steps: int, progress: bool
    ) -> None:
        chief = jax.process_index() == 0
        self.every = max(1, int(train_config.log_every_steps))
        self.batch_size = int(train_config.batch_size)
        self.max_nonfinite = int(train_config.max_nonfinite_steps)
        self.file = (workdir / "metrics.jsonl").open("a") if chief else None
        self.bar = tqdm(total=steps, initial=start, disable=not (progress and chief), unit="step")
        self.window: list[dict[str, jax.Array]] = []
        self.extra: dict[str, float] = {}
        self.last_time, self.last_step = time.perf_counter(), start
        self.steps_logged = self.updates_applied = 0  # this call's, over fetched windows

    def timed_compile(self, jitted: Any, *args: Any) -> Any:
        """`jitted` lowered and compiled for `args`; the time goes into the next log line."""
        begin = time.perf_counter()
        compiled = jitted.lower(*args).compile()
        self.extra["compile_s"] = time.perf_counter() - begin
        logging.info(
            "train step compiled in %.1fs; memory per device: %s",
            self.extra["compile_s"],
            compiled.memory_analysis(),  # None on backends that do not report it
        )
        self.last_time = time.perf_counter()
        return compiled

    def add(self, metrics: dict[str, jax.Array]) -> None:
        self.window.append(metrics)

    def flush(self, step: int) -> None:
        """Fetches, logs and shows the window ending at `step` (no-op when it is empty)."""
        if not self.window:
            return
        # The loop's only device->host read; it waits for this step to finish.
        window = jax.device_get(self.window)
        self.window = []
        self.bar.update(len(window))
        self.steps_logged += len(window)
        self.updates_applied += int(sum(m["update_applied"] for m in window))
        summary: dict[str, float] = {}
        for key in window[-1]:
            values = np.asarray([m[key] for m in window], np.float64)
            summary[key] = int(values[-1]) if key == "nonfinite_count" else float(values.mean())
        now = time.perf_counter()
        summary["steps_per_s"] = (step - self.last_step) / max(now - self.last_time, 1e-9)
        summary["examples_per_s"] = summary["steps_per_s"] * self.batch_size
        summary.update(self.extra)
        self.extra = {}
        self.last_time, self.last_step = now, step
        if self.file is not None:
            self.file.write(json.dumps({"step": step, **summary}) + "\n")
            self.file.flush()
        self.bar.set_postfix(
            loss=f"{summary['loss']:.4g}", steps_per_s=f"{summary['steps_per_s']:.3g}"
        )
        if summary["nonfinite_count"] > self.max_nonfinite:
            raise NonFiniteError(
                f"{summary['nonfinite_count']} updates refused for a non-finite loss or "
                f"gradient norm by step {step}, more than "
                f"train.max_nonfinite_steps={self.max_nonfinite}; last metrics: {summary}"
            )

    def check_some_update_applied(self, step: int) -> None:
        """At the end of a call: every one of its updates refused is a failed run, not a done one
        (the limit `max_nonfinite_steps` alone lets a short run of all-NaN data through)."""
        if self.steps_logged and not self.updates_applied:
            raise NonFiniteError(
                f"all {self.steps_logged} updates up to step {step} were refused for a non-finite "
                "loss or gradient norm: check the data for NaN/inf, the learning rate and the "
                "initial weights"
            )

    def close(self) -> None:
        self.bar.close()
        if self.file is not None:
            self.file.close()


def train(
    train_config: Any,
    ckpt_config: Any,
    mesh_config: Any,
    *,
    workdir: str | epath.Path,
    init_fn: Callable[[jax.Array], Any],
    loss_fn: LossFn,
    batches: Any,
    seed: int = 0,
    initial_params: Callable[[Any], Any] | None = None,
    trainable: optim.Trainable = None,
    mesh: Mesh | None = None,
    progress: bool = True,
    stop_at_step: int | None = None,
    host_fn: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
) -> TrainState:
    """Trains to `train_config.steps`, resuming from `workdir` if it holds a checkpoint.

    Args:
      train_config: a `config.<model>.train` section (vlaw/config.py `_train_section`).
      ckpt_config, mesh_config: `config.ckpt`, `config.mesh` (its `rules` shard parameters).
      workdir: the run's checkpoint directory; `metrics.jsonl` is appended next to the steps
        (on resume, lines logged past the restored checkpoint are dropped first: a killed and
        resumed run logs each step once).
      init_fn: rng -> parameter tree, boxed with logical axis names or not (e.g.
        `lambda rng: model.init(rng, x)["params"]`). Only traced for shapes when resuming.
      loss_fn: (params, batch, rng) -> (loss, metrics); pure, the model's apply inside. It gets
        the float32 masters: cast with `optim.cast_for_compute` for bf16 compute.
      batches: a `vlaw.data.batches.BatchIterator` yielding this host's rows of the global
        batch (leading dimension `batch_size / process_count`).
      seed: root of the init and training keys (the data pipeline seeds itself).
      initial_params: None (initialise with `init_fn`), or `target -> params`, called only
        when there is no checkpoint to resume. `target` is the abstract parameter tree:
        unboxed `jax.ShapeDtypeStruct`s in `train.param_dtype` carrying their `NamedSharding`.
        It returns placed jax.Arrays (`checkpoints.restore_params(directory, target)`) or host
        arrays, which are shape-checked against `target` and placed shard by shard. The caller
        resolves `train.init_from`; the trainer does not read it.
      trainable: None, a bool tree like the params, or `(path "a/b/kernel", abstract leaf)
        -> bool` (the leaf is a ShapeDtypeStruct);
        frozen leaves get no gradient, no update and no optimizer memory.
      mesh: an explicit mesh (tests, notebooks); default: built from `mesh_config`.
      progress: show a tqdm bar (process 0 only).
      host_fn: applied to each host batch before the upload: tokenize prompts, decode JPEG
        bytes, drop strings (only numeric arrays go to the devices).
      stop_at_step: end this call after that step, with a checkpoint, as a preemption would
        (time-limited jobs, tests); the schedule still spans `train_config.steps`.

    Returns:
      The final TrainState (after the last step). After SIGTERM: raises `Preempted` once the
      checkpoint of the step it stopped at is written.
    """
    mesh = mesh if mesh is not None else mesh_lib.create_mesh(mesh_config)
    workdir = epath.Path(workdir)
    steps = int(train_config.steps)
    last = steps if stop_at_step is None else min(steps, int(stop_at_step))
    param_dtype = jnp.dtype(train_config.param_dtype)
    ema_decay = float(train_config.get("ema_decay", 0.0))
    init_rng, train_rng = jax.random.split(jax.random.PRNGKey(seed))

    # Shapes and logical names only: nothing is allocated.
    boxed = jax.eval_shape(init_fn, init_rng)
    param_sh = mesh_lib.param_shardings(boxed, mesh, mesh_lib.rules_from_config(mesh_config))
    abstract_params = nn.unbox(boxed)
    mask = optim.trainable_mask(abstract_params, trainable)
    tx = optim.make_optimizer(train_config, mask)
    build = functools.partial(
        _initial_state, init_fn=init_fn, tx=tx, param_dtype=param_dtype, use_ema=ema_decay > 0
    )
    abstract_state = jax.eval_shape(build, init_rng, train_rng, None)
    state_sh = _state_shardings(abstract_state, param_sh, mesh, train_config, mask)

    manager = checkpoints.make_manager(workdir, ckpt_config)
    start = manager.latest_step()
    if start is not None:
        target = jax.tree.map(
            lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
            abstract_state,
            state_sh,
        )
        state, data_state = checkpoints.restore(manager, start, target)
        batches.restore(data_state)
        _drop_metrics_after(workdir, start)
        logging.info("resumed from %s at step %d", workdir, start)
    else:
        start = 0
        # A run killed before its first checkpoint committed logged steps it trains again.
        _drop_metrics_after(workdir, start)
        placed = None
        if initial_params is not None:
            target_params = jax.tree.map(
                lambda a, sh: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=sh),
                abstract_state.params,
                param_sh,
            )
            given = initial_params(target_params)
            placed = _place_params(given, abstract_state.params, param_sh)
        state = jax.jit(build, out_shardings=state_sh, donate_argnums=(2,))(
            init_rng, train_rng, placed
        )

    step_fn = jax.jit(
        functools.partial(
            train_step,
            loss_fn=loss_fn,
            tx=tx,
            schedule=optim.learning_rate_schedule(train_config),
            ema_decay=ema_decay,
            mask=mask,
        ),
        in_shardings=(state_sh, mesh_lib.batch_sharding(mesh)),
        out_shardings=(state_sh, mesh_lib.replicated(mesh)),
        donate_argnums=(0,),
    )

    log = _MetricsLog(workdir, train_config, start, steps, progress)
    save_every = max(1, int(ckpt_config.save_every_steps))
    # Several processes must stop at the same step: there orbax's reached_preemption (JAX's
    # preemption sync, which owns SIGTERM) decides; one process watches SIGTERM itself.
    multi_process = jax.process_count() > 1
    saved_step, compiled, stop = start, None, False
    try:
        with _StopOnSigterm(install=not multi_process) as sigterm, jax.transfer_guard("disallow"):
            for step in range(start, last):
                try:
                    local_batch = next(batches)
                except StopIteration:
                    logging.warning("data ran out after step %d of %d", step, steps)
                    break
                if host_fn is not None:
                    local_batch = host_fn(local_batch)
                _check_batch_size(local_batch, int(train_config.batch_size))
                batch = mesh_lib.make_global_batch(local_batch, mesh)
                if compiled is None:
                    # Compiled ahead of time, once: a shape change later is an error, not a
                    # silent recompile, and compile time stays out of steps/s.
                    compiled = log.timed_compile(step_fn, state, batch)
                state, metrics = compiled(state, batch)
                done = step + 1
                if multi_process:
                    stop = manager.reached_preemption(done)
                else:
                    stop = sigterm.requested.is_set()
                log.add(metrics)
                if done % log.every == 0 or done == last or stop:
                    log.flush(done)
                if done == last:
                    # Before the final save: a rerun then retries the refused steps instead
                    # of finding a finished run.
                    log.check_some_update_applied(done)
                if done % save_every == 0 or done == last or stop:
                    # orbax's device->host copy is its own business: the guard is there to
                    # catch the step's hidden syncs, and a save is a deliberate one.
                    with jax.transfer_guard("allow"):
                        checkpoints.save(manager, done, state, batches.state())
                    saved_step = done
                if stop:
                    logging.warning("stopped by SIGTERM after step %d; checkpoint saved", done)
                    break
            else:
                step = last
            log.flush(step)  # the data ran out with steps not yet logged
            if not stop:  # a preempted call is not over: it goes on when resumed
                log.check_some_update_applied(step)
            if step > saved_step:  # the data ran out between two saves
                with jax.transfer_guard("allow"):
                    checkpoints.save(manager, step, state, batches.state())
    finally:
        log.close()
        manager.wait_until_finished()
        manager.close()
    if stop:
        raise Preempted(
            f"training in {workdir} stopped by SIGTERM after step {saved_step} of {steps}, its "
            "checkpoint saved; run the same command again to resume"
        )
    return state
