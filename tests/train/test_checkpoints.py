"""orbax manager policy (keep-N + keep-period, atomic), shape checks and init_from errors."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from vlaw.train import checkpoints


def ckpt_config(**overrides):
    c = ml_collections.ConfigDict(
        {"save_every_steps": 1, "keep": 1, "keep_period": 0, "async_save": True}
    )
    c.update(**overrides)
    return c


def test_keeps_the_newest_and_every_kth_step(tmp_path):
    manager = checkpoints.make_manager(tmp_path, ckpt_config(keep=1, keep_period=2))
    for step in range(1, 6):
        state = {"w": jnp.full((2,), float(step))}
        checkpoints.save(manager, step, state, {"batches": step})
    manager.wait_until_finished()
    assert manager.all_steps() == [2, 4, 5]
    # Only committed step directories exist: no temporary leftovers after the async writes.
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2", "4", "5"]
    abstract = {"w": jax.ShapeDtypeStruct((2,), jnp.float32, sharding=_one_device())}
    state, data = checkpoints.restore(manager, 4, abstract)
    np.testing.assert_array_equal(state["w"], [4.0, 4.0])
    assert data == {"batches": 4}
    manager.close()


def _one_device():
    return jax.sharding.SingleDeviceSharding(jax.devices()[0])


def test_mismatch_lists_missing_unexpected_and_misshaped_paths():
    stored = {"a": np.zeros((2, 3)), "gone": np.zeros(4)}
    expected = {
        "a": jax.ShapeDtypeStruct((2, 4), jnp.float32),
        "new": jax.ShapeDtypeStruct((1,), jnp.float32),
    }
    with pytest.raises(checkpoints.CheckpointMismatchError) as error:
        checkpoints.check_compatible(stored, expected, "checkpoint X")
    message = str(error.value)
    assert "checkpoint X does not match the model (3 problems)" in message
    assert "a: checkpoint has (2, 3), model expects (2, 4)" in message
    assert "new: missing from the checkpoint (model expects (1,))" in message
    assert "gone: in the checkpoint (4,) but not in the model" in message


def test_init_from_an_empty_directory_says_so(tmp_path):
    with pytest.raises(FileNotFoundError, match="init_from: no checkpoint under"):
        checkpoints.restore_params(tmp_path, {"w": jax.ShapeDtypeStruct((2,), jnp.float32)})


def test_restore_params_reads_the_moving_average_when_asked(tmp_path):
    manager = checkpoints.make_manager(tmp_path / "ema", ckpt_config())
    state = {"params": {"w": jnp.ones((2,))}, "ema_params": {"w": jnp.full((2,), 0.5)}}
    checkpoints.save(manager, 1, state, {"batches": 1})
    manager.wait_until_finished()
    manager.close()
    abstract = {"w": jax.ShapeDtypeStruct((2,), jnp.float32, sharding=_one_device())}
    ema = checkpoints.restore_params(tmp_path / "ema", abstract, key="ema_params")
    np.testing.assert_array_equal(ema["w"], [0.5, 0.5])
    np.testing.assert_array_equal(checkpoints.restore_params(tmp_path / "ema", abstract)["w"], 1)
    plain = checkpoints.make_manager(tmp_path / "no_ema", ckpt_config())
    checkpoints.save(plain, 1, {"params": state["params"]}, {})
    plain.wait_until_finished()
    plain.close()
    with pytest.raises(checkpoints.CheckpointMismatchError, match="holds no 'ema_params'"):
        checkpoints.restore_params(tmp_path / "no_ema", abstract, key="ema_params")
