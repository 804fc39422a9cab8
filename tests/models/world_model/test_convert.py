"""vlaw/convert/ctrl_world.py: key mapping, layouts and the errors that name the key."""

import jax.numpy as jnp
import numpy as np
import pytest

from vlaw.convert.ctrl_world import (
    convert_ctrl_world,
    convert_state_dict,
    param_shapes,
    torch_key,
)
from vlaw.models.world_model.ctrl_world import ActionEncoder, CtrlWorldConfig


def test_torch_key_mapping():
    assert (
        torch_key(("down_blocks_0", "resnets_1", "spatial_res_block", "conv1", "kernel"))
        == "down_blocks.0.resnets.1.spatial_res_block.conv1.weight"
    )
    assert torch_key(("time_embedding", "linear_1", "bias")) == "time_embedding.linear_1.bias"
    assert (
        torch_key(("transformer_blocks_0", "ff", "net_0", "proj", "kernel"))
        == "transformer_blocks.0.ff.net.0.proj.weight"
    )
    assert torch_key(("attn1", "to_out_0", "kernel")) == "attn1.to_out.0.weight"
    assert torch_key(("norm", "scale")) == "norm.weight"
    assert torch_key(("time_mixer", "mix_factor")) == "time_mixer.mix_factor"


def _encoder_state(hidden=8, seed=0):
    rng = np.random.default_rng(seed)
    shapes = {"0": (hidden, 7), "2": (hidden, hidden), "4": (hidden, hidden)}
    state = {}
    for k, (o, i) in shapes.items():
        state[f"action_encoder.action_encode.{k}.weight"] = rng.standard_normal((o, i))
        state[f"action_encoder.action_encode.{k}.bias"] = rng.standard_normal((o,))
    return state


def _target(hidden=8):
    return param_shapes(ActionEncoder(hidden), jnp.zeros((1, 1, 7)))


def test_linear_and_conv_layouts():
    state = _encoder_state()
    params = convert_state_dict(state, _target(), prefix="action_encoder.")
    np.testing.assert_allclose(
        np.asarray(params["action_encode_0"]["kernel"]),
        state["action_encoder.action_encode.0.weight"].T,
        rtol=1e-6,
    )
    # Conv3d (out, in, 3, 1, 1) -> (3, 1, 1, in, out).
    w = np.arange(2 * 3 * 3, dtype=np.float32).reshape(2, 3, 3, 1, 1)
    target = {"conv": {"kernel": jnp.zeros((3, 1, 1, 3, 2)), "bias": jnp.zeros((2,))}}
    out = convert_state_dict({"conv.weight": w, "conv.bias": np.zeros(2)}, target)
    np.testing.assert_array_equal(np.asarray(out["conv"]["kernel"]), w.transpose(2, 3, 4, 1, 0))


def test_missing_key_is_named():
    state = _encoder_state()
    del state["action_encoder.action_encode.2.bias"]
    with pytest.raises(KeyError, match=r"action_encoder\.action_encode\.2\.bias"):
        convert_state_dict(state, _target(), prefix="action_encoder.")


def test_wrong_shape_is_named():
    state = _encoder_state()
    state["action_encoder.action_encode.4.weight"] = np.zeros((8, 9))
    with pytest.raises(ValueError, match=r"action_encoder\.action_encode\.4\.weight.*\(8, 8\)"):
        convert_state_dict(state, _target(), prefix="action_encoder.")


def test_unexpected_key_under_prefix_is_refused():
    state = _encoder_state()
    state["action_encoder.action_encode.6.weight"] = np.zeros((8, 8))
    with pytest.raises(ValueError, match=r"action_encode\.6\.weight"):
        convert_state_dict(state, _target(), prefix="action_encoder.")
    # Keys outside the prefix (vae., text_encoder., image_encoder.) are not this call's business.
    state = {**_encoder_state(), "image_encoder.x": np.zeros(1)}
    convert_state_dict(state, _target(), prefix="action_encoder.")


def test_ctrl_world_checkpoint_layout_missing_unet_key_is_named():
    cfg = CtrlWorldConfig.preset("tiny")
    state = _encoder_state(cfg.hidden_dim)
    with pytest.raises(KeyError, match=r"missing key 'unet\.[a-z_.0-9]+'"):
        convert_ctrl_world(state, cfg)


def test_clip_text_embeddings_with_a_tiny_tower():
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from vlaw.convert.ctrl_world import clip_text_embeddings

    config = transformers.CLIPTextConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=77,
        projection_dim=8,
        eos_token_id=63,
    )
    torch.manual_seed(0)
    model = transformers.CLIPTextModelWithProjection(config)

    class CharTokenizer:
        """Stand-in for CLIP's tokenizer: one id per character, eos, padded to 77."""

        def __call__(self, texts, padding, truncation, return_tensors):
            assert (padding, truncation, return_tensors) == ("max_length", True, "pt")
            ids = [[1 + ord(c) % 60 for c in t][:76] + [63] for t in texts]
            ids = [x + [0] * (77 - len(x)) for x in ids]
            return {"input_ids": torch.tensor(ids)}

    texts = ["scoop the beans into the bowl", "stack the blocks"]
    emb = clip_text_embeddings(texts, tokenizer=CharTokenizer(), text_model=model)
    assert emb.shape == (2, 8)
    with torch.no_grad():
        ref = model(**CharTokenizer()(texts, "max_length", True, "pt")).text_embeds.numpy()
    np.testing.assert_allclose(emb, ref, rtol=1e-6)
    assert np.abs(emb[0] - emb[1]).max() > 1e-4


def test_paper_sizes_match_the_svd_state_dict_layout():
    """Every key and shape of the real SVD img2vid UNet and VAE (built on the meta device, no
    weights) is exactly what the paper-size converters expect, and nothing else."""
    torch = pytest.importorskip("torch")
    diffusers = pytest.importorskip("diffusers")
    from vlaw.convert.ctrl_world import torch_layout_shapes
    from vlaw.models.world_model.unet import UNetConfig, UNetSpatioTemporal
    from vlaw.models.world_model.vae import TemporalVAE, VAEConfig

    with torch.device("meta"):
        unet = diffusers.UNetSpatioTemporalConditionModel(num_frames=14, sample_size=96)
        vae = diffusers.AutoencoderKLTemporalDecoder(
            down_block_types=("DownEncoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
        )
    cfg = UNetConfig.preset("paper")
    ours = torch_layout_shapes(
        param_shapes(
            UNetSpatioTemporal(cfg),
            jnp.zeros((1, 1, 8, 8, 8)),
            jnp.zeros((1,)),
            jnp.zeros((1, 1, 1, 1024)),
            jnp.zeros((1, 3)),
        )
    )
    assert ours == {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    ours = torch_layout_shapes(
        param_shapes(TemporalVAE(VAEConfig.preset("paper")), jnp.zeros((1, 8, 8, 3))), "vae."
    )
    assert ours == {f"vae.{k}": tuple(v.shape) for k, v in vae.state_dict().items()}


def test_vlaw_world_model_and_converter_import_without_torch():
    import subprocess
    import sys

    code = (
        "import sys, vlaw.models.world_model, vlaw.convert.ctrl_world; "
        "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_load_torch_state_dict_pt_and_safetensors(tmp_path):
    torch = pytest.importorskip("torch")
    safetensors_torch = pytest.importorskip("safetensors.torch")
    from vlaw.convert.ctrl_world import load_torch_state_dict

    state = {"a.weight": torch.randn(3, 2), "b.bias": torch.randn(4).half()}
    torch.save(state, tmp_path / "ckpt.pt")
    safetensors_torch.save_file(state, str(tmp_path / "ckpt.safetensors"))
    for name in ("ckpt.pt", "ckpt.safetensors"):
        loaded = load_torch_state_dict(str(tmp_path / name))
        assert set(loaded) == set(state)
        for k, v in state.items():
            assert loaded[k].dtype == np.float32
            np.testing.assert_allclose(loaded[k], v.float().numpy())
