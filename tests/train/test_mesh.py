"""Mesh construction, sharding rules and global batches on 8 fake CPU devices."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from vlaw import config as vlaw_config
from vlaw.train import mesh as mesh_lib


def test_minus_one_takes_the_devices_left_over():
    assert mesh_lib.resolve_mesh_shape({"data": -1, "fsdp": 4, "tensor": 1}, 8) == (2, 4, 1)
    assert mesh_lib.resolve_mesh_shape({"data": 1, "fsdp": -1, "tensor": 2}, 8) == (1, 4, 2)
    mesh = mesh_lib.create_mesh({"data": -1, "fsdp": 1, "tensor": 1})
    assert dict(mesh.shape) == {"data": 8, "fsdp": 1, "tensor": 1}


@pytest.mark.parametrize(
    "sizes, message",
    [
        ({"data": -1, "fsdp": -1, "tensor": 1}, "at most one"),
        ({"data": -1, "fsdp": 3, "tensor": 1}, "not a multiple of 3"),
        ({"data": 2, "fsdp": 2, "tensor": 1}, "needs 4 devices, 8 available"),
    ],
)
def test_impossible_meshes_are_explained(sizes, message):
    with pytest.raises(ValueError, match=message):
        mesh_lib.resolve_mesh_shape(sizes, 8)


@pytest.fixture(scope="module")
def mesh_2x4():
    return mesh_lib.create_mesh({"data": 2, "fsdp": 2, "tensor": 2})


def test_logical_names_follow_the_rules(mesh_2x4):
    spec = mesh_lib.spec_for((64, 256), ("embed", "mlp"), mesh_2x4)
    assert spec == P("fsdp", "tensor")
    # "kv" is explicitly replicated; "heads" takes tensor.
    assert mesh_lib.spec_for((64, 4, 16), ("embed", "heads", "kv"), mesh_2x4) == P("fsdp", "tensor")
    # A dimension the mesh axis does not divide stays whole (no silent padding).
    assert mesh_lib.spec_for((3, 256), ("embed", "mlp"), mesh_2x4) == P(None, "tensor")
    # Unknown names replicate; with_partitioning names are mesh axes already.
    assert mesh_lib.spec_for((4, 4), ("mystery", None), mesh_2x4) == P()
    assert mesh_lib.spec_for((4, 4), (None, "data"), mesh_2x4, logical=False) == P(None, "data")


def test_size_one_axes_fall_through_to_the_next_rule():
    mesh = mesh_lib.create_mesh({"data": 2, "fsdp": 4, "tensor": 1})
    # No tensor parallelism: "mlp" falls back to fsdp, "embed" then finds fsdp taken.
    assert mesh_lib.spec_for((16, 64), ("mlp", "embed"), mesh) == P("fsdp")


def test_unnamed_arrays_get_fsdp_on_their_largest_divisible_dim(mesh_2x4):
    big = jax.ShapeDtypeStruct((6, 256, 64), jnp.float32)
    small = jax.ShapeDtypeStruct((256,), jnp.float32)
    shardings = mesh_lib.param_shardings({"big": big, "small": small}, mesh_2x4)
    assert shardings["big"].spec == P(None, "fsdp")
    assert shardings["small"].spec == P()  # a bias: cheaper replicated


def test_boxed_params_are_sharded_by_their_logical_names(mesh_2x4):
    dense = nn.Dense(
        128,
        kernel_init=nn.with_logical_partitioning(nn.initializers.zeros, ("embed", "mlp")),
        bias_init=nn.with_logical_partitioning(nn.initializers.zeros, ("mlp",)),
    )
    boxed = jax.eval_shape(dense.init, jax.random.PRNGKey(0), jnp.zeros((1, 32)))["params"]
    shardings = mesh_lib.param_shardings(boxed, mesh_2x4)
    assert shardings["kernel"].spec == P("fsdp", "tensor")
    assert shardings["bias"].spec == P("tensor")


def test_global_batch_is_an_explicit_transfer_sharded_over_data_and_fsdp(mesh_2x4):
    local = {"x": np.arange(8 * 3, dtype=np.float32).reshape(8, 3), "i": np.arange(8)}
    with jax.transfer_guard("disallow"):
        batch = mesh_lib.make_global_batch(local, mesh_2x4)
        with pytest.raises(Exception, match="[Dd]isallowed"):
            jnp.asarray(local["x"]) + 1  # the guard does catch implicit transfers
    assert batch["x"].sharding.spec == P(("data", "fsdp"))
    assert {s.data.shape for s in batch["x"].addressable_shards} == {(2, 3)}
    np.testing.assert_array_equal(np.asarray(batch["x"]), local["x"])


def test_batch_not_divisible_by_data_parallel_devices_is_named(mesh_2x4):
    with pytest.raises(ValueError, match=r"batch field \['y'\] has shape \(6,\)"):
        mesh_lib.make_global_batch({"y": np.zeros(6)}, mesh_2x4)


def test_scanned_blocks_keep_the_layer_axis_whole(mesh_2x4):
    class Block(nn.Module):
        @nn.compact
        def __call__(self, x, _):
            init = nn.with_logical_partitioning(nn.initializers.zeros, ("embed", "mlp"))
            return nn.Dense(64, kernel_init=init, use_bias=False)(x), None

    class Stack(nn.Module):
        @nn.compact
        def __call__(self, x):
            scanned = nn.scan(
                Block,
                variable_axes={"params": 0},
                split_rngs={"params": True},
                length=3,
                metadata_params={nn.PARTITION_NAME: "layers"},
            )
            return scanned()(x, None)[0]

    boxed = jax.eval_shape(Stack().init, jax.random.PRNGKey(0), jnp.zeros((1, 64)))["params"]
    spec = mesh_lib.param_shardings(boxed, mesh_2x4)["ScanBlock_0"]["Dense_0"]["kernel"].spec
    assert spec == P(None, "fsdp", "tensor")


def test_rules_are_config_and_read_back_from_json():
    mesh_config = vlaw_config.experiment_config(("scoop",), "tiny").mesh
    rules = mesh_lib.rules_from_config(mesh_config)
    assert rules[:2] == (("batch", ("data", "fsdp")), ("embed", ("fsdp",)))
    assert ("kv", None) in rules
    # config.json stores tuples as lists; read back, they mean the same rules.
    as_json = json.loads(json.dumps(mesh_config.to_dict()))
    assert mesh_lib.rules_from_config(as_json) == rules


@pytest.mark.parametrize(
    "rules, message",
    [
        (
            (("embed", "fsdpp"),),
            r"rules\[0\] = \('embed', 'fsdpp'\): \['fsdpp'\] names no mesh axis",
        ),
        ((("embed", "fsdp"), ("mlp", ("tensor", "model"))), r"rules\[1\].*\['model'\]"),
        (("embed",), r"rules\[0\] = 'embed': each rule is a \(logical name"),
        ((("embed", "fsdp", "tensor"),), "each rule is a"),
    ],
)
def test_a_bad_rule_is_named(rules, message):
    with pytest.raises(ValueError, match=message):
        mesh_lib.rules_from_config({"rules": rules})


def test_overridden_rules_change_the_shardings(mesh_2x4):
    rules = mesh_lib.rules_from_config({"rules": (("embed", "tensor"), ("mlp", "fsdp"))})
    assert mesh_lib.spec_for((64, 256), ("embed", "mlp"), mesh_2x4, rules) == P("tensor", "fsdp")
