"""The shared attention wrapper: its native causal and padding masks equal explicit masks."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vlaw.models import layers


def _qkv(seed=0, batch=2, length=6, heads=4, kv_heads=2, dim=8):
    keys = jax.random.split(jax.random.key(seed), 3)
    query = jax.random.normal(keys[0], (batch, length, heads, dim))
    key = jax.random.normal(keys[1], (batch, length, kv_heads, dim))
    value = jax.random.normal(keys[2], (batch, length, kv_heads, dim))
    return query, key, value


def _reference(query, key, value, mask):
    # Plain softmax attention with grouped heads repeated, written out for the comparison.
    groups = query.shape[2] // key.shape[2]
    key = jnp.repeat(key, groups, axis=2)
    value = jnp.repeat(value, groups, axis=2)
    logits = jnp.einsum("btnd,bsnd->bnts", query, key) / np.sqrt(query.shape[-1])
    logits = jnp.where(mask, logits, -1e30)
    return jnp.einsum("bnts,bsnd->btnd", jax.nn.softmax(logits, axis=-1), value)


def test_causal_flag_equals_explicit_causal_mask():
    query, key, value = _qkv()
    causal = jnp.tril(jnp.ones((6, 6), bool))[None, None]
    got = layers.dot_product_attention(query, key, value, is_causal=True)
    np.testing.assert_allclose(got, _reference(query, key, value, causal), atol=1e-5)


def test_sequence_lengths_equal_explicit_padding_mask():
    query, key, value = _qkv(seed=1)
    lengths = jnp.array([6, 3], jnp.int32)
    got = layers.dot_product_attention(
        query, key, value, query_seq_lengths=lengths, key_value_seq_lengths=lengths
    )
    valid = jnp.arange(6)[None, :] < lengths[:, None]
    mask = valid[:, None, None, :]
    want = _reference(query, key, value, mask)
    # Padded query rows are undefined (XLA returns zeros); compare the real ones.
    np.testing.assert_allclose(got[0], want[0], atol=1e-5)
    np.testing.assert_allclose(got[1, :3], want[1, :3], atol=1e-5)


def test_remat_policy_names():
    assert layers.remat_policy("none") is None
    assert layers.remat_policy("nothing_saveable") is jax.checkpoint_policies.nothing_saveable
    with pytest.raises(ValueError, match="no_such_policy"):
        layers.remat_policy("no_such_policy")
