"""A wrong-result bug of jax 0.10.2's SPMD partitioner (CPU) that the world model's UNet hits.

Pattern (the spatial -> temporal token re-layout of every TransformerSpatioTemporal block):
tokens (B*F, S, C) @ W1, re-laid out to (B*S, F, C), a residual `h + h @ W2`, laid back.
On a 2x2x2 (data, fsdp, tensor) mesh with the batch over (data, fsdp) at ONE example per batch
shard and W1/W2 sharded over both fsdp and tensor, the result is wrong (errors as large as the
values). Two examples per shard, or weights on one axis only, are correct (the slow UNet
sharding test uses 8 examples). Strict xfail: this test fails loudly once jax fixes it.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P


def _relayout_residual(x, w1, w2):
    h = x @ w1  # (B*F, S, C) with B=4, F=3, S=6
    h = h.reshape(4, 3, 6, 64).transpose(0, 2, 1, 3).reshape(24, 3, 64)  # (B*S, F, C)
    h = h + h @ w2
    return h.reshape(4, 6, 3, 64).transpose(0, 2, 1, 3).reshape(12, 6, 64)


@pytest.mark.xfail(strict=True, reason="jax 0.10.2 SPMD partitioner bug, see module docstring")
def test_relayout_with_one_example_per_shard_is_exact():
    if len(jax.devices()) < 8:
        pytest.skip("needs the 8 fake CPU devices of tests/conftest.py")
    mesh = jax.make_mesh((2, 2, 2), ("data", "fsdp", "tensor"), axis_types=(AxisType.Auto,) * 3)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((12, 6, 64)), jnp.float32)
    w1 = jnp.asarray(rng.standard_normal((64, 64)), jnp.float32)
    w2 = jnp.asarray(rng.standard_normal((64, 64)), jnp.float32)
    ref = jax.jit(_relayout_residual)(x, w1, w2)
    out = jax.jit(_relayout_residual)(
        jax.device_put(x, NamedSharding(mesh, P(("data", "fsdp")))),
        jax.device_put(w1, NamedSharding(mesh, P("fsdp", "tensor"))),
        jax.device_put(w2, NamedSharding(mesh, P("tensor", "fsdp"))),
    )
    np.testing.assert_allclose(np.asarray(out), np.asarray(ref), atol=1e-3)
