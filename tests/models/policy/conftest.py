"""A tiny pi0.5, its parameters and a batch, built once for the policy tests (compiles are slow)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlaw.models.policy.pi05 import Observation, Pi05, abstract_params, pi05_config


def _make_observation(config, batch: int, seed: int = 0) -> Observation:
    """Random images for every slot (the third masked, as DROID's right wrist) and prompts of
    different lengths."""
    rng = np.random.default_rng(seed)
    size, slots, length = config.image_size, config.num_images, config.max_token_len
    lengths = rng.integers(length // 2, length, batch)
    masks = np.ones((batch, slots), bool)
    masks[:, -1] = False
    return Observation(
        images=jnp.asarray(rng.uniform(-1, 1, (batch, slots, size, size, 3)), jnp.float32),
        image_masks=jnp.asarray(masks),
        tokens=jnp.asarray(rng.integers(1, config.vocab_size, (batch, length)), jnp.int32),
        token_mask=jnp.asarray(np.arange(length)[None] < lengths[:, None]),
    )


@pytest.fixture(scope="session")
def make_observation():
    """make_observation(config, batch, seed=0) -> Observation."""
    return _make_observation


def random_params(abstract, seed: int = 0, std: float = 0.05):
    """Random parameters for the shapes of `jax.eval_shape(model.init, ...)`, drawn with numpy.

    Compiling `init` costs tens of seconds on a busy CPU, numpy nothing. Every weight is live
    (nothing left at a zero init); LayerNorm gains sit at 1 (flax's LayerNorm multiplies by
    `scale`, Gemma's RMSNorm by 1 + `scale`).
    """
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        names = [str(getattr(k, "key", k)) for k in path]
        value = std * rng.standard_normal(leaf.shape).astype(np.float32)
        if names[-1] == "scale" and names[0] == "img":
            value += 1.0
        return jnp.asarray(value)

    return jax.tree_util.tree_map_with_path(draw, nn.unbox(abstract))


@pytest.fixture(scope="session")
def tiny_policy():
    """(config, model, params, velocity) for the tiny preset without remat (compiles faster on
    CPU); `velocity` is the jitted full pass, shared so that it compiles once."""
    config = pi05_config("tiny", remat_policy="none")
    model = Pi05(config)
    return config, model, random_params(abstract_params(config)), jax.jit(model.apply)


@pytest.fixture(scope="session")
def make_params():
    """make_params(config, seed=0) -> random parameters {"params": ...} for `Pi05(config)`."""
    return lambda config, seed=0: random_params(abstract_params(config), seed)
