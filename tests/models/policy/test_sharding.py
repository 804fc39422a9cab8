"""The policy's logical axis names shard on a 2x4 mesh of fake CPU devices, same numbers."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

# FSDP-style rules: weights split along their model width, the batch along "data".
RULES = (("layers", None), ("embed", "fsdp"), ("vocab", None), ("mlp", None), ("heads", None),
         ("kv", None))  # fmt: skip


def test_fsdp_sharded_forward_equals_single_device(tiny_policy, make_observation):
    config, model, params, velocity = tiny_policy
    # Auto axes: GSPMD propagates shardings (explicit axes would need out_sharding on the conv).
    auto = (jax.sharding.AxisType.Auto,) * 2
    mesh = jax.make_mesh((2, 4), ("data", "fsdp"), axis_types=auto)
    obs = make_observation(config, 4, seed=5)
    x = jax.random.normal(jax.random.key(4), (4, config.action_horizon, config.action_dim))
    t = jnp.array([0.2, 0.4, 0.6, 0.8])
    want = velocity(params, obs, x, t)

    abstract = jax.eval_shape(lambda: model.init(jax.random.key(0), obs, x, t))
    specs = nn.get_partition_spec(abstract)
    shardings = nn.logical_to_mesh_sharding(specs, mesh, RULES)
    sharded = jax.device_put(params, shardings)
    q = sharded["params"]["llm"]["layers"]["attn_0"]["q"]
    assert q.sharding.spec == P(None, None, "fsdp", None)  # (layers, heads, embed, kv)
    assert len(q.addressable_shards) == 8

    batch = NamedSharding(mesh, P("data"))
    got = jax.jit(model.apply)(sharded, *jax.device_put((obs, x, t), batch))
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), atol=1e-5, rtol=1e-5)
