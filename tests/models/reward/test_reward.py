"""yes_probability, yes_no_loss and a tiny fine-tuning run that separates two synthetic videos."""

import time

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from vlaw.losses import yes_no_loss
from vlaw.models.reward.qwen3_vl import (
    Qwen3VL,
    Qwen3VLConfig,
    answer_logits,
    init_params,
    last_token_positions,
    yes_probability,
)
from vlaw.models.reward.tokenizer import answer_token_ids, build_small_tokenizer, prepare_inputs

CONFIG = Qwen3VLConfig.tiny()


@pytest.fixture(scope="module")
def tokenizer():
    return build_small_tokenizer()


@pytest.fixture(scope="module")
def params():
    return init_params(CONFIG, jax.random.PRNGKey(0))


def _trajectory(success: bool, rng: np.random.Generator, steps: int = 30) -> np.ndarray:
    """A white 8x8 block on a 32x32 grey table that slides to the right edge (success) or
    stays at the left edge (failure), at a random height and with pixel noise, so no two
    samples are equal."""
    frames = np.full((steps, 32, 32, 3), 60, np.float32)
    row = rng.integers(4, 20)
    for t in range(steps):
        x = round(t / (steps - 1) * 24)
        x = x if success else 0
        frames[t, row : row + 8, x : x + 8] = 230
    frames += rng.normal(0, 12, frames.shape)
    return np.clip(frames, 0, 255).astype(np.uint8)


def test_answer_positions_left_and_right_padding():
    mask = jnp.asarray([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    np.testing.assert_array_equal(last_token_positions(mask), [2, 4, 4])


LENGTH = 160  # one padded prompt length for the whole file, so each function compiles once


@pytest.fixture(scope="module")
def pair(tokenizer):
    """A success and a failure rollout with instructions of different lengths (so the first
    prompt is right-padded)."""
    rng = np.random.default_rng(1)
    trajectories = [_trajectory(True, rng), _trajectory(False, rng)]
    instructions = ["push the block", "slide the white block all the way to the right side"]
    batch = prepare_inputs(tokenizer, trajectories, instructions, config=CONFIG, length=LENGTH)
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum() < LENGTH
    return trajectories, instructions, batch


def _p_yes(params, batch, tokenizer, **kw):
    yes, no = answer_token_ids(tokenizer)
    return yes_probability(
        params,
        batch["input_ids"],
        batch["video"],
        batch["attention_mask"],
        config=CONFIG,
        yes_token_id=yes,
        no_token_id=no,
        **kw,
    )


def test_uniform_next_token_gives_one_over_vocab(tokenizer, params, pair):
    """With the final norm's scale at zero every logit is 0: P(yes) = 1/V exactly, and the
    two-way read-out is 1/2."""
    zeroed = jax.tree_util.tree_map(lambda x: x, params)
    zeroed["language_model"]["norm"]["scale"] = jnp.zeros_like(
        params["language_model"]["norm"]["scale"]
    )
    batch = pair[2]
    p = _p_yes(zeroed, batch, tokenizer)
    np.testing.assert_allclose(p, 1.0 / CONFIG.text.vocab_size, rtol=1e-5)
    np.testing.assert_allclose(_p_yes(zeroed, batch, tokenizer, renormalize=True), 0.5, rtol=1e-6)


def test_yes_probability_matches_full_forward_and_ignores_batch_companions(tokenizer, params, pair):
    """P(yes) is the softmax of the full forward's logits at each sample's last real token,
    and a sample scores the same whatever the other prompt of its batch is."""
    trajectories, instructions, batch = pair
    yes, _ = answer_token_ids(tokenizer)
    p = _p_yes(params, batch, tokenizer)
    forward = jax.jit(lambda p, i, v, m: Qwen3VL(CONFIG).apply({"params": p}, i, v, m))
    logits = forward(params, batch["input_ids"], batch["video"], batch["attention_mask"])
    last = batch["attention_mask"].sum(1) - 1
    expected = jax.nn.softmax(logits[jnp.arange(2), last], axis=-1)[:, yes]
    np.testing.assert_allclose(p, expected, rtol=1e-5)
    assert not np.allclose(p[0], p[1])  # the two queries do differ
    twice = prepare_inputs(
        tokenizer, trajectories[:1] * 2, instructions[:1] * 2, config=CONFIG, length=LENGTH
    )
    np.testing.assert_allclose(_p_yes(params, twice, tokenizer), p[0], rtol=1e-4)


def test_yes_no_loss_hand_computed():
    logits = jnp.asarray([[0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 3.0, 0.0, 0.0]])
    labels = jnp.asarray([True, False, False])
    loss, metrics = yes_no_loss(logits, labels, yes_token_id=1, no_token_id=2)
    lse = np.log(np.exp(logits).sum(-1))
    per_example = np.asarray([lse[0] - 2.0, lse[1] - 1.0, lse[2] - 0.0])
    np.testing.assert_allclose(loss, per_example.mean(), rtol=1e-6)
    np.testing.assert_allclose(metrics["accuracy"], 2 / 3)  # the third says yes for a failure
    np.testing.assert_allclose(metrics["p_yes"], np.mean(np.exp(logits[:, 1] - lse)), rtol=1e-6)
    weighted, _ = yes_no_loss(
        logits, labels, yes_token_id=1, no_token_id=2, weights=jnp.asarray([1.0, 1.0, 0.0])
    )
    np.testing.assert_allclose(weighted, per_example[:2].mean(), rtol=1e-6)


def test_finetune_separates_two_videos(tokenizer, params):
    """Paper Appendix C in miniature: fine-tune on success labels (block ends on the right =
    success), then label fresh noisy rollouts with P(yes) > α = 0.8."""
    start = time.time()
    yes, no = answer_token_ids(tokenizer)
    rng = np.random.default_rng(0)
    instruction = "push the white block to the right"

    def batch(n):
        labels = rng.permutation(np.arange(n) % 2).astype(bool)
        trajectories = [_trajectory(bool(label), rng) for label in labels]
        inputs = prepare_inputs(tokenizer, trajectories, [instruction] * n, config=CONFIG)
        return inputs, labels

    optimizer = optax.adam(3e-3)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def train_step(params, opt_state, inputs, labels):
        def loss_fn(p):
            logits = answer_logits(
                p, inputs["input_ids"], inputs["video"], inputs["attention_mask"], config=CONFIG
            )
            return yes_no_loss(logits, labels, yes_token_id=yes, no_token_id=no)

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics

    state = (params, optimizer.init(params))
    for _ in range(50):
        inputs, labels = batch(8)
        *state, metrics = train_step(*state, inputs, labels)
    trained = state[0]

    correct = []
    for _ in range(4):  # 32 held-out rollouts, in batches of the training shape
        inputs, labels = batch(8)
        p_yes = yes_probability(
            trained,
            inputs["input_ids"],
            inputs["video"],
            inputs["attention_mask"],
            config=CONFIG,
            yes_token_id=yes,
            no_token_id=no,
        )
        correct.append((np.asarray(p_yes) > 0.8) == labels)
    accuracy = float(np.mean(correct))
    elapsed = time.time() - start
    print(
        f"held-out accuracy at alpha=0.8: {accuracy:.3f}, last train loss "
        f"{float(metrics['loss']):.4f}, {elapsed:.1f} s"
    )
    assert accuracy > 0.9
