"""pi0.5 (tiny preset) trained by `trainer.train` with the production rules on 8 fake CPU devices.

The rules are `config.mesh.rules` of the experiment config; the mesh is data 2 x fsdp 4. Two
steps must equal the same two steps on one device, and every parameter and optimizer moment
must be sharded as the rules say (tests/conftest.py provides the 8 devices).

Slow (about 100 s on a shared 2-core CPU, nearly all of it compiling the sharded and the
one-device init and step), so outside the default run: `pytest -m slow`. The default run
covers the same machinery on an MLP (tests/train/test_trainer.py).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from vlaw import config as vlaw_config
from vlaw.losses import flow_matching_loss
from vlaw.models.policy import pi05
from vlaw.train import mesh as mesh_lib
from vlaw.train import optim, trainer

pytestmark = pytest.mark.slow

BATCH = 8
MODEL = pi05.pi05_config("tiny")


class Pi05Batches:
    """Random pi0.5 training batches; batch i is a pure function of i."""

    def __init__(self):
        self.index = 0

    def __iter__(self):
        return self

    def __next__(self):
        rng = np.random.default_rng(self.index)
        self.index += 1
        size, tokens = MODEL.image_size, MODEL.max_token_len
        return {
            "images": rng.uniform(-1, 1, (BATCH, MODEL.num_images, size, size, 3)).astype(
                np.float32
            ),
            "tokens": rng.integers(0, MODEL.vocab_size, (BATCH, tokens)).astype(np.int32),
            "token_mask": np.arange(tokens)[None, :] < rng.integers(4, tokens, (BATCH, 1)),
            "actions": rng.normal(size=(BATCH, MODEL.action_horizon, MODEL.action_dim)).astype(
                np.float32
            ),
        }

    def state(self):
        return {"index": self.index}

    def restore(self, state):
        self.index = state["index"]


def _loss_fn(params, batch, rng):
    model = pi05.Pi05(MODEL)
    obs = pi05.Observation(
        images=batch["images"],
        image_masks=jnp.ones(batch["images"].shape[:2], bool),
        tokens=batch["tokens"],
        token_mask=batch["token_mask"],
    )
    return flow_matching_loss(
        lambda x_t, t: model.apply({"params": params}, obs, x_t, t), batch["actions"], rng
    )


def _configs():
    c = vlaw_config.experiment_config(("scoop",), "tiny")
    train = ml_collections.ConfigDict(c.policy.train.to_dict())
    train.update(steps=2, batch_size=BATCH, learning_rate=1e-3, warmup_steps=1)
    ckpt = ml_collections.ConfigDict(c.ckpt.to_dict())
    ckpt.update(save_every_steps=1000, async_save=False)
    return train, ckpt, c.mesh


def _train(workdir, mesh):
    train_cfg, ckpt, mesh_cfg = _configs()
    return trainer.train(
        train_cfg,
        ckpt,
        mesh_cfg,
        workdir=workdir,
        init_fn=lambda rng: pi05.init_params(MODEL, rng)["params"],
        loss_fn=_loss_fn,
        batches=Pi05Batches(),
        mesh=mesh,
        progress=False,
    )


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    sharded_mesh = mesh_lib.create_mesh({"data": 2, "fsdp": 4, "tensor": 1})
    one_device = mesh_lib.create_mesh({"data": 1, "fsdp": 1, "tensor": 1}, jax.devices()[:1])
    root = tmp_path_factory.mktemp("pi05")
    return sharded_mesh, _train(root / "sharded", sharded_mesh), _train(root / "single", one_device)


def test_two_sharded_steps_equal_one_device(runs):
    _, sharded, single = runs
    assert int(sharded.step) == int(single.step) == 2
    for (path, a), b in zip(
        jax.tree_util.tree_leaves_with_path(sharded.params), jax.tree.leaves(single.params)
    ):
        np.testing.assert_allclose(
            np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5, err_msg=optim.path_name(path)
        )


def test_parameters_and_moments_are_sharded_as_the_production_rules_say(runs):
    mesh, sharded, _ = runs
    rules = mesh_lib.rules_from_config(_configs()[2])
    boxed = pi05.abstract_params(MODEL)["params"]
    # Every pi0.5 parameter carries logical axis names, so each one's spec follows the rules.
    assert all(
        isinstance(leaf, nn.LogicallyPartitioned)
        for leaf in jax.tree.leaves(boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))
    )
    expected = jax.tree.map(
        lambda box: mesh_lib.spec_for(box.value.shape, box.names, mesh, rules),
        boxed,
        is_leaf=lambda x: isinstance(x, nn.Partitioned),
    )
    specs = jax.tree.map(lambda x: x.sharding.spec, sharded.params)
    assert specs == expected
    # The rules do shard this model: FSDP splits most of its matrices 4 ways.
    sharded_leaves = [s for s in jax.tree.leaves(specs, is_leaf=lambda x: isinstance(x, P)) if s]
    assert len(sharded_leaves) > 10
    adam = sharded.opt_state[1][0]
    for moments in (adam.mu, adam.nu):
        assert jax.tree.map(lambda x: x.sharding.spec, moments) == expected
    assert adam.count.sharding.spec == P()
