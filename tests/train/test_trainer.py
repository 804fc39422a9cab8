"""End-to-end tests of vlaw.train on a 2-layer MLP regression with logical axis names.

Every run is a few steps of a (batch 8, 8 -> 32 -> 1) MLP, so the whole file takes seconds;
what is checked is the machinery: exact resume, sharding, SIGTERM, non-finite refusal,
shape-checked restore, a single compile, and that the loss actually falls.
"""

import json
import os
import shutil
import signal

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from vlaw import config as vlaw_config
from vlaw.train import checkpoints, optim, trainer
from vlaw.train import mesh as mesh_lib

IN_DIM, BATCH = 8, 8


class MLP(nn.Module):
    """Regression MLP whose parameters carry logical axis names, as the real models' do."""

    hidden: int = 32

    @nn.compact
    def __call__(self, x):  # x: [batch, IN_DIM] -> [batch, 1]
        def dense(features, names):
            return nn.Dense(
                features,
                kernel_init=nn.with_logical_partitioning(nn.initializers.lecun_normal(), names),
                bias_init=nn.with_logical_partitioning(nn.initializers.zeros, names[1:]),
            )

        x = nn.gelu(dense(self.hidden, ("embed", "mlp"))(x))
        return dense(1, ("mlp", "embed"))(x)


class RegressionBatches:
    """A BatchIterator of y = x @ w + noise; batch i is a pure function of (seed, i)."""

    def __init__(self, seed=0, nan_at=(), on_batch=None, limit=None):
        self.seed, self.index, self.limit = seed, 0, limit
        self.nan_at, self.on_batch = set(nan_at), on_batch
        self.w = np.random.default_rng(1234).normal(size=(IN_DIM, 1)).astype(np.float32)

    def __iter__(self):
        return self

    def __next__(self):
        if self.limit is not None and self.index >= self.limit:
            raise StopIteration
        rng = np.random.default_rng([self.seed, self.index])
        x = rng.normal(size=(BATCH, IN_DIM)).astype(np.float32)
        y = x @ self.w + 0.01 * rng.normal(size=(BATCH, 1)).astype(np.float32)
        if self.index in self.nan_at:
            x[0, 0] = np.nan
        if self.on_batch is not None:
            self.on_batch(self.index)
        self.index += 1
        return {"x": x, "y": y}

    def state(self):
        return {"seed": self.seed, "index": self.index}

    def restore(self, state):
        self.seed, self.index = state["seed"], state["index"]


def make_configs(**train_overrides):
    """(train, ckpt, mesh) sections of the tiny experiment config, with overrides."""
    c = vlaw_config.experiment_config(("scoop",), "tiny")
    train = ml_collections.ConfigDict(c.policy.train.to_dict())
    train.update(steps=4, batch_size=BATCH, learning_rate=1e-2, warmup_steps=1, log_every_steps=1)
    train.update(**train_overrides)
    ckpt = ml_collections.ConfigDict(c.ckpt.to_dict())
    ckpt.update(save_every_steps=2, keep=3, async_save=True)
    return train, ckpt, ml_collections.ConfigDict(c.mesh.to_dict())


def model_fns(hidden=32):
    model = MLP(hidden)

    def init_fn(rng):
        return model.init(rng, jnp.zeros((1, IN_DIM)))["params"]

    def loss_fn(params, batch, rng):
        del rng  # deterministic model
        pred = model.apply({"params": params}, batch["x"])
        loss = jnp.mean((pred - batch["y"]) ** 2)
        return loss, {"pred_mean": jnp.mean(pred)}

    return init_fn, loss_fn


def one_device_mesh():
    return mesh_lib.create_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])


def run(
    workdir,
    batches=None,
    train_cfg=None,
    mesh=None,
    hidden=32,
    loss_fn=None,
    save_every=2,
    rules=None,
    **kw,
):
    train_cfg = train_cfg if train_cfg is not None else make_configs()[0]
    _, ckpt, mesh_cfg = make_configs()
    ckpt.save_every_steps = save_every
    if rules is not None:
        mesh_cfg.rules = rules
    init_fn, default_loss = model_fns(hidden)
    return trainer.train(
        train_cfg,
        ckpt,
        mesh_cfg,
        workdir=workdir,
        init_fn=init_fn,
        loss_fn=loss_fn or default_loss,
        batches=batches if batches is not None else RegressionBatches(),
        mesh=mesh if mesh is not None else one_device_mesh(),
        **{"progress": False, **kw},
    )


def assert_trees_equal(a, b):
    for (path, x), y in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y), err_msg=str(path))


def read_metrics(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_resume_two_then_four_is_bitwise_equal_to_four_straight(tmp_path):
    straight_batches = RegressionBatches()
    straight = run(tmp_path / "straight", straight_batches)

    first = RegressionBatches()
    half = run(tmp_path / "resumed", first, stop_at_step=2)
    assert int(half.step) == 2 and first.state()["index"] == 2
    second = RegressionBatches()  # a fresh process would start at 0: the checkpoint moves it
    resumed = run(tmp_path / "resumed", second)

    assert int(resumed.step) == int(straight.step) == 4
    assert second.state() == straight_batches.state() == {"seed": 0, "index": 4}
    assert_trees_equal(resumed.params, straight.params)
    assert_trees_equal(resumed.opt_state, straight.opt_state)
    np.testing.assert_array_equal(resumed.rng, straight.rng)
    # The resumed run's logged losses for steps 3 and 4 are the straight run's.
    straight_losses = [m["loss"] for m in read_metrics(tmp_path / "straight")]
    resumed_losses = [m["loss"] for m in read_metrics(tmp_path / "resumed")]
    assert resumed_losses == straight_losses
    # keep=3 of the saves at 2 and 4; metrics.jsonl beside them does not confuse orbax.
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir() if p.name.isdigit()) == [
        "2",
        "4",
    ]


def test_sharded_step_on_2x4_mesh_equals_one_device(tmp_path):
    mesh = mesh_lib.create_mesh({"data": 2, "fsdp": 4, "tensor": 1})
    assert dict(mesh.shape) == {"data": 2, "fsdp": 4, "tensor": 1}
    cfg = make_configs(steps=2)[0]
    sharded = run(tmp_path / "mesh", train_cfg=cfg, mesh=mesh)
    single = run(tmp_path / "single", train_cfg=cfg)
    # "embed" -> fsdp: the first kernel [8, 32] is split in 4 along its input dimension.
    kernel = sharded.params["Dense_0"]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp")
    assert {s.data.shape for s in kernel.addressable_shards} == {(2, 32)}
    mu = sharded.opt_state[1][0].mu["Dense_0"]["kernel"]  # Adam's first moment follows it
    assert mu.sharding.spec == kernel.sharding.spec
    for a, b in zip(jax.tree.leaves(sharded.params), jax.tree.leaves(single.params)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)


def test_sigterm_saves_a_checkpoint_that_resumes_to_the_same_result(tmp_path):
    straight = run(tmp_path / "straight")
    before = signal.getsignal(signal.SIGTERM)

    def preempt(index):
        if index == 0:  # delivered while step 1's batch is being read
            os.kill(os.getpid(), signal.SIGTERM)

    with pytest.raises(trainer.Preempted, match="after step 1 of 4"):
        run(tmp_path / "preempted", RegressionBatches(on_batch=preempt))
    # Stopped at the first step boundary, not at save_every, with that step's checkpoint.
    assert checkpoints.latest_step(str(tmp_path / "preempted")) == 1
    assert signal.getsignal(signal.SIGTERM) is before  # the handler was put back
    resumed = run(tmp_path / "preempted", RegressionBatches())
    assert int(resumed.step) == 4
    assert_trees_equal(resumed.params, straight.params)


def test_nonfinite_batch_is_refused_inside_the_step():
    init_fn, loss_fn = model_fns()
    train_cfg = make_configs()[0]
    tx = optim.make_optimizer(train_cfg)
    rngs = jax.random.split(jax.random.PRNGKey(0))
    state = trainer._initial_state(
        *rngs, None, init_fn=init_fn, tx=tx, param_dtype=jnp.float32, use_ema=True
    )
    step = jax.jit(
        lambda s, b: trainer.train_step(
            s,
            b,
            loss_fn=loss_fn,
            tx=tx,
            schedule=optim.learning_rate_schedule(train_cfg),
            ema_decay=0.9,
            mask=None,
        )
    )
    batches = RegressionBatches(nan_at={1})
    good, metrics = step(state, next(batches))
    assert bool(metrics["update_applied"]) and int(good.nonfinite_count) == 0
    bad, metrics = step(good, next(batches))
    assert not np.isfinite(metrics["loss"]) and not bool(metrics["update_applied"])
    assert int(bad.nonfinite_count) == 1 and int(bad.step) == 2
    assert_trees_equal(bad.params, good.params)
    assert_trees_equal(bad.ema_params, good.ema_params)
    assert_trees_equal(bad.opt_state, good.opt_state)
    # The next finite batch trains again from the untouched state.
    after, metrics = step(bad, next(batches))
    assert bool(metrics["update_applied"]) and np.isfinite(after.params["Dense_0"]["kernel"]).all()


def test_too_many_nonfinite_steps_stop_the_run(tmp_path):
    train_cfg = make_configs(max_nonfinite_steps=1)[0]
    batches = RegressionBatches(nan_at={1, 2})
    with pytest.raises(trainer.NonFiniteError, match="max_nonfinite_steps=1"):
        run(tmp_path, batches, train_cfg=train_cfg)
    assert batches.state()["index"] == 3  # stopped at the second refusal


def test_one_refused_step_is_counted_and_training_goes_on(tmp_path):
    state = run(tmp_path, RegressionBatches(nan_at={2}))
    assert int(state.step) == 4 and int(state.nonfinite_count) == 1
    applied = [m["update_applied"] for m in read_metrics(tmp_path)]
    assert applied == [1.0, 1.0, 0.0, 1.0]


def test_wrong_shape_checkpoint_names_the_parameter_and_both_shapes(tmp_path):
    run(tmp_path, train_cfg=make_configs(steps=2)[0])
    with pytest.raises(checkpoints.CheckpointMismatchError) as error:
        run(tmp_path, hidden=16)
    message = str(error.value)
    assert "params/Dense_0/kernel: checkpoint has (8, 32), model expects (8, 16)" in message
    assert "params/Dense_1/kernel: checkpoint has (32, 1), model expects (16, 1)" in message


def test_step_compiles_once_across_logging_and_checkpointing(tmp_path):
    _, loss_fn = model_fns()
    # The loss is traced exactly once per compile of the step: a retrace would raise.
    state = run(tmp_path, loss_fn=chex.assert_max_traces(loss_fn, n=1))
    assert int(state.step) == 4


def test_loss_falls_and_metrics_are_logged(tmp_path):
    train_cfg = make_configs(steps=60, learning_rate=5e-2, log_every_steps=20, warmup_steps=3)[0]
    run(tmp_path, train_cfg=train_cfg, save_every=1000)  # saved once, at the end
    metrics = read_metrics(tmp_path)
    assert [m["step"] for m in metrics] == [20, 40, 60]
    assert {"loss", "grad_norm", "learning_rate", "pred_mean", "steps_per_s"} <= set(metrics[0])
    assert metrics[-1]["loss"] < 0.2 * metrics[0]["loss"]


def test_initial_params_from_a_vlaw_run_import_params_without_resuming(tmp_path):
    source = run(tmp_path / "source", train_cfg=make_configs(steps=2)[0])
    # learning rate 0: the single step leaves the imported weights exactly as they were.
    cfg = make_configs(steps=1, learning_rate=0.0)[0]
    targets = []

    def from_source(target):
        targets.append(target)
        return checkpoints.restore_params(tmp_path / "source", target)

    batches = RegressionBatches()
    imported = run(tmp_path / "target", batches, train_cfg=cfg, initial_params=from_source)
    assert int(imported.step) == 1 and batches.state()["index"] == 1  # fresh data, step 0
    assert_trees_equal(imported.params, source.params)
    kernel = targets[0]["Dense_0"]["kernel"]  # the abstract tree, with dtype and sharding
    assert kernel.shape == (IN_DIM, 32) and kernel.dtype == jnp.float32
    assert isinstance(kernel.sharding, jax.sharding.NamedSharding)
    # Resuming never asks for initial parameters.
    run(tmp_path / "target", train_cfg=make_configs(steps=2)[0], initial_params=from_source)
    assert len(targets) == 1


def test_trainable_mask_freezes_params_and_their_moments(tmp_path):
    init = jax.device_get(nn.unbox(model_fns()[0](jax.random.split(jax.random.PRNGKey(0))[0])))
    state = run(tmp_path, trainable=lambda path, leaf: not path.startswith("Dense_0"))
    assert_trees_equal(state.params["Dense_0"], init["Dense_0"])
    assert not np.array_equal(state.params["Dense_1"]["kernel"], init["Dense_1"]["kernel"])


def test_ema_params_track_params(tmp_path):
    state = run(tmp_path, train_cfg=make_configs(ema_decay=0.5)[0])
    assert state.ema_params is not None
    diff = np.abs(state.ema_params["Dense_1"]["kernel"] - state.params["Dense_1"]["kernel"])
    assert 0 < diff.max() < 1.0


def test_data_running_out_saves_where_it_stopped(tmp_path):
    state = run(tmp_path, RegressionBatches(limit=3))  # save_every=2: the third step is unsaved
    assert int(state.step) == 3
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["2", "3"]


def test_batch_of_the_wrong_size_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"batch field 'x' has shape \(8, 8\); expected 4 rows"):
        run(tmp_path, train_cfg=make_configs(batch_size=4)[0])


def test_bf16_compute_keeps_float32_masters_and_moments(tmp_path):
    model = MLP()

    def loss_fn(params, batch, rng):
        compute = optim.cast_for_compute(params, jnp.bfloat16)
        assert jax.tree.leaves(compute)[0].dtype == jnp.bfloat16
        pred = model.apply({"params": compute}, batch["x"].astype(jnp.bfloat16))
        return jnp.mean((pred.astype(jnp.float32) - batch["y"]) ** 2), {}

    state = run(tmp_path, loss_fn=loss_fn)
    assert {x.dtype for x in jax.tree.leaves(state.params)} == {jnp.dtype(jnp.float32)}
    assert state.opt_state[1][0].mu["Dense_0"]["kernel"].dtype == jnp.float32


class PromptBatches(RegressionBatches):
    """Adds a string field, as the policy and reward pipelines' prompts are."""

    def __next__(self):
        batch = super().__next__()
        return {**batch, "prompt": np.array([b"scoop the beans"] * BATCH)}


def test_strings_must_be_handled_on_the_host(tmp_path):
    with pytest.raises(TypeError, match=r"batch field \['prompt'\] holds \|S15"):
        run(tmp_path / "raw", PromptBatches())

    def tokenize(batch):
        lengths = np.array([len(p) for p in batch.pop("prompt")], np.int32)
        return {**batch, "prompt_length": lengths}

    state = run(tmp_path / "tokenized", PromptBatches(), host_fn=tokenize)
    assert int(state.step) == 4
    first = read_metrics(tmp_path / "tokenized")[0]
    assert first["compile_s"] > 0 and first["examples_per_s"] > 0


def test_init_params_from_host_arrays_are_sharded_and_shape_checked(tmp_path):
    source = jax.device_get(run(tmp_path / "source", train_cfg=make_configs(steps=2)[0]).params)
    cfg = make_configs(steps=1, learning_rate=0.0)[0]
    mesh = mesh_lib.create_mesh({"data": 2, "fsdp": 4, "tensor": 1})
    state = run(tmp_path / "target", train_cfg=cfg, mesh=mesh, initial_params=lambda _: source)
    assert state.params["Dense_0"]["kernel"].sharding.spec == jax.sharding.PartitionSpec("fsdp")
    assert_trees_equal(state.params, source)

    wrong = {**source, "Dense_1": {**source["Dense_1"], "bias": np.zeros(3, np.float32)}}
    with pytest.raises(checkpoints.CheckpointMismatchError, match=r"Dense_1/bias: checkpoint has"):
        run(tmp_path / "wrong", train_cfg=cfg, initial_params=lambda _: wrong)


class RecordingBar:
    """Stands in for tqdm: records how far the bar moves at each update."""

    updates: list[int] = []

    def __init__(self, total, initial, disable, unit):
        self.n = initial

    def update(self, n):
        RecordingBar.updates.append(n)
        self.n += n

    def set_postfix(self, **kw):
        pass

    def close(self):
        pass


def test_progress_bar_counts_steps_when_their_metrics_are_fetched(tmp_path, monkeypatch):
    RecordingBar.updates = []
    monkeypatch.setattr(trainer, "tqdm", RecordingBar)
    # Metrics every 2 steps: the bar moves 2 at a time, when the device has finished them,
    # never one step per dispatch.
    run(tmp_path, train_cfg=make_configs(log_every_steps=2)[0], progress=True)
    assert RecordingBar.updates == [2, 2]


def test_a_call_whose_every_update_is_refused_raises(tmp_path):
    # 4 refused steps stay under max_nonfinite_steps=10, yet the run learnt nothing.
    with pytest.raises(trainer.NonFiniteError, match="all 4 updates up to step 4 were refused"):
        run(tmp_path, RegressionBatches(nan_at=range(4)))
    # No final checkpoint: a rerun retries the refused steps rather than finding a done run.
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.isdigit()) == ["2"]
    with pytest.raises(trainer.NonFiniteError, match="all 2 updates up to step 4"):
        run(tmp_path, RegressionBatches(nan_at=range(4)))


def _without_timings(metrics):
    timings = ("steps_per_s", "examples_per_s", "compile_s")
    return [{k: v for k, v in m.items() if k not in timings} for m in metrics]


def test_resume_after_a_kill_logs_each_step_once(tmp_path):
    run(tmp_path / "straight")
    killed = tmp_path / "killed"
    run(killed)  # checkpoints at 2 and 4, metrics for steps 1-4
    # A kill after step 4 was logged but before its checkpoint was written, with a stray line.
    shutil.rmtree(killed / "4")
    with open(killed / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 5, "loss": 1.0}) + '\n{"step": 6, "lo')  # torn by the kill
    run(killed)  # resumes at 2, trains and logs 3 and 4 again
    assert [m["step"] for m in read_metrics(killed)] == [1, 2, 3, 4]
    assert _without_timings(read_metrics(killed)) == _without_timings(
        read_metrics(tmp_path / "straight")
    )
    # A kill before the first checkpoint committed: the rerun starts over, so again each once.
    for step in ("2", "4"):
        shutil.rmtree(killed / step)
    run(killed)
    assert [m["step"] for m in read_metrics(killed)] == [1, 2, 3, 4]


def test_moments_under_a_mask_take_their_parameter_sharding(tmp_path):
    mesh = mesh_lib.create_mesh({"data": 2, "fsdp": 4, "tensor": 1})
    state = run(
        tmp_path,
        train_cfg=make_configs(steps=1)[0],
        mesh=mesh,
        trainable=lambda path, leaf: path.startswith("Dense_0"),
    )
    adam = state.opt_state.inner_states["train"].inner_state[1][0]
    kernel = state.params["Dense_0"]["kernel"]
    assert kernel.sharding.spec == jax.sharding.PartitionSpec("fsdp")
    assert adam.mu["Dense_0"]["kernel"].sharding == kernel.sharding
    assert adam.nu["Dense_0"]["kernel"].sharding == kernel.sharding
    assert isinstance(adam.mu["Dense_1"]["kernel"], optax.MaskedNode)  # frozen: no moment
    assert adam.count.sharding.spec == jax.sharding.PartitionSpec()


def test_mesh_rules_come_from_the_mesh_config(tmp_path):
    mesh = mesh_lib.create_mesh({"data": 2, "fsdp": 4, "tensor": 1})
    cfg = make_configs(steps=1)[0]
    # "embed" kept whole: the small kernel is then replicated (too small for default FSDP).
    state = run(tmp_path / "whole", train_cfg=cfg, mesh=mesh, rules=(("embed", None),))
    assert state.params["Dense_0"]["kernel"].sharding.spec == jax.sharding.PartitionSpec()
    with pytest.raises(ValueError, match=r"config.mesh.rules\[0\].*'fsdpp'"):
        run(tmp_path / "typo", train_cfg=cfg, mesh=mesh, rules=(("embed", "fsdpp"),))
