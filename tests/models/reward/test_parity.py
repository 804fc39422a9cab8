"""Parity of our Qwen3-VL with transformers' on a tiny random config, weights moved by our
converter (float32, CPU). The config is the verified recipe of reward_dsrl_metrics.md §1.10."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from vlaw.models.reward.qwen3_vl import Qwen3VL, mrope_position_ids  # noqa: E402
from vlaw.models.reward.vision import VisionEncoder, patchify_video  # noqa: E402

VIDEO, START, END = 6, 3, 4  # the special-token ids of conftest.hf_tiny_config
# Two frame groups of 2x3 merged tokens, each behind a stand-in timestamp token (12).
IDS = [10, 11] + 2 * ([12, START] + [VIDEO] * 6 + [END]) + [13, 14, 15]


def _video(seed=0, frames=4):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (1, frames, 16, 24, 3)).astype(np.float32)


def _hf_patches(video):
    from transformers.models.qwen3_vl.video_processing_qwen3_vl import Qwen3VLVideoProcessor

    frames = torch.from_numpy(video).permute(0, 1, 4, 2, 3)  # (B, T, C, H, W)
    # `patchify` uses no processor state; calling it unbound avoids the torchvision the
    # processor's resizing needs.
    patches, t, h, w = Qwen3VLVideoProcessor.patchify(None, frames, 4, 2, 2)
    return patches.reshape(-1, patches.shape[-1]), torch.tensor([[t, h, w]])


def test_patchify_matches_processor(hf_tiny):
    _, config, _ = hf_tiny
    video = _video(frames=5)  # odd: the last frame is repeated
    ours = np.asarray(patchify_video(jnp.asarray(video), config.vision))
    theirs, grid = _hf_patches(video)
    assert grid.tolist() == [[3, 4, 6]]
    np.testing.assert_array_equal(ours.reshape(-1, ours.shape[-1]), theirs.numpy())


def test_vision_encoder_parity(hf_tiny):
    hf, config, params = hf_tiny
    video = _video()
    patches, grid = _hf_patches(video)
    with torch.no_grad():
        out = hf.model.visual(patches, grid_thw=grid)
    encode = jax.jit(lambda p, x: VisionEncoder(config.vision).apply({"params": p}, x, (4, 6)))
    ours, taps = encode(params["visual"], patchify_video(jnp.asarray(video), config.vision))
    np.testing.assert_allclose(ours[0], out.pooler_output.numpy(), atol=1e-4, rtol=1e-4)
    assert taps.shape[0] == 3
    for ours_k, theirs_k in zip(taps, out.deepstack_features):
        np.testing.assert_allclose(ours_k[0], theirs_k.numpy(), atol=1e-4, rtol=1e-4)


def _hf_logits(hf, ids, video):
    patches, grid = _hf_patches(video)
    ids_t = torch.tensor([ids])
    with torch.no_grad():
        out = hf(
            input_ids=ids_t,
            pixel_values_videos=patches,
            video_grid_thw=grid,
            mm_token_type_ids=(ids_t == VIDEO).long() * 2,
        )
    return out.logits[0].numpy()


def test_logits_parity(hf_tiny):
    hf, config, params = hf_tiny
    video = _video()
    theirs = _hf_logits(hf, IDS, video)
    ours = jax.jit(lambda p, i, v: Qwen3VL(config).apply({"params": p}, i, v))(
        params, jnp.asarray([IDS]), jnp.asarray(video)
    )[0]
    err = float(np.max(np.abs(np.asarray(ours) - theirs)))
    print(f"max |logit error| = {err:.2e} (logit scale {np.abs(theirs).max():.1f})")
    assert ours.shape == (23, 64)
    assert err < 1e-4


def test_unsorted_deepstack_and_grouped_query_parity(hf_tiny_unsorted_gqa):
    """deepstack_visual_indexes [2, 0]: transformers feeds text layer 0 block 0's tap (through
    merger 1) and layer 1 block 2's; ordering the taps by list position instead moved the
    logits by ~30 %. Text attention: 6 query heads on 3 KV heads, 6 x 24 != width 64."""
    hf, config, params = hf_tiny_unsorted_gqa
    assert config.vision.deepstack_layers == (2, 0)
    assert (config.text.num_heads, config.text.num_kv_heads, config.text.head_dim) == (6, 3, 24)
    video = _video(3)
    patches, grid = _hf_patches(video)
    with torch.no_grad():
        their_taps = hf.model.visual(patches, grid_thw=grid).deepstack_features
    encode = jax.jit(lambda p, x: VisionEncoder(config.vision).apply({"params": p}, x, (4, 6)))
    _, taps = encode(params["visual"], patchify_video(jnp.asarray(video), config.vision))
    assert taps.shape[0] == len(their_taps) == 2
    for ours_k, theirs_k in zip(taps, their_taps):
        np.testing.assert_allclose(ours_k[0], theirs_k.numpy(), atol=1e-4, rtol=1e-4)
    theirs = _hf_logits(hf, IDS, video)
    ours = jax.jit(lambda p, i, v: Qwen3VL(config).apply({"params": p}, i, v))(
        params, jnp.asarray([IDS]), jnp.asarray(video)
    )[0]
    err = float(np.max(np.abs(np.asarray(ours) - theirs)))
    print(f"unsorted DeepStack + GQA: max |logit error| {err:.2e} of {np.abs(theirs).max():.1f}")
    assert err < 1e-4


def test_batched_padded_logits_parity(hf_tiny):
    """Two prompts of different lengths, right-padded into one batch, each equal to its own
    unbatched reference run (padding must not leak into positions, DeepStack or attention)."""
    hf, config, params = hf_tiny
    ids_b = [20] + IDS[2:] + [16]  # a different text prefix and one more token
    videos = np.concatenate([_video(1), _video(2)])
    length = max(len(IDS), len(ids_b))
    batch = np.zeros((2, length), np.int32)
    mask = np.zeros((2, length), np.int32)
    for i, ids in enumerate([IDS, ids_b]):
        batch[i, : len(ids)], mask[i, : len(ids)] = ids, 1
    ours = jax.jit(lambda p, i, v, m: Qwen3VL(config).apply({"params": p}, i, v, m))(
        params, jnp.asarray(batch), jnp.asarray(videos), jnp.asarray(mask)
    )
    for i, ids in enumerate([IDS, ids_b]):
        theirs = _hf_logits(hf, ids, videos[i : i + 1])
        np.testing.assert_allclose(ours[i, : len(ids)], theirs, atol=1e-4, rtol=1e-4)


def test_rope_index_golden_and_transformers(hf_tiny):
    hf, config, _ = hf_tiny
    ids = jnp.asarray([IDS])
    ours, deltas = mrope_position_ids(
        ids, jnp.ones_like(ids), vision_token_ids=(VIDEO,), merged_grid_hw=(2, 3)
    )
    # Golden fixture of reward_dsrl_metrics.md §1.10 (transformers 4.57.1).
    golden_t = [0, 1, 2, 3, 4, 4, 4, 4, 4, 4, 7, 8, 9, 10, 10, 10, 10, 10, 10, 13, 14, 15, 16]
    golden_h = [0, 1, 2, 3, 4, 4, 4, 5, 5, 5, 7, 8, 9, 10, 10, 10, 11, 11, 11, 13, 14, 15, 16]
    golden_w = [0, 1, 2, 3, 4, 5, 6, 4, 5, 6, 7, 8, 9, 10, 11, 12, 10, 11, 12, 13, 14, 15, 16]
    np.testing.assert_array_equal(ours[:, 0], [golden_t, golden_h, golden_w])
    assert int(deltas[0]) == -6

    # Against transformers' get_rope_index on a left- and a right-padded batch.
    rows = [[0, 0, *IDS], [*IDS[:-1], 17, 18, 0]]
    masks = [[0, 0] + [1] * len(IDS), [1] * (len(IDS) + 1) + [0]]
    ids_t = torch.tensor(rows)
    theirs, their_deltas = hf.model.get_rope_index(
        ids_t,
        (ids_t == VIDEO).long() * 2,
        video_grid_thw=torch.tensor([[2, 4, 6], [2, 4, 6]]),
        attention_mask=torch.tensor(masks),
    )
    ours, deltas = mrope_position_ids(
        jnp.asarray(rows), jnp.asarray(masks), vision_token_ids=(VIDEO,), merged_grid_hw=(2, 3)
    )
    np.testing.assert_array_equal(ours, theirs.numpy())
    np.testing.assert_array_equal(deltas, their_deltas.numpy()[:, 0])
