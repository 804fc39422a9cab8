"""The Qwen3-VL importer: a safetensors directory round trip, and errors that name the tensor."""

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from vlaw.convert.qwen3_vl import (  # noqa: E402
    config_from_hf,
    load_checkpoint,
    params_from_state_dict,
)


def _leaves(tree, prefix=""):
    for key, value in tree.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}/")
        else:
            yield f"{prefix}{key}", value


def test_safetensors_directory_round_trip(hf_tiny, tmp_path):
    """`save_pretrained` writes config.json + model.safetensors; loading that directory gives
    the config and parameters the in-memory state dict gives."""
    hf, config, params = hf_tiny
    hf.save_pretrained(tmp_path)
    loaded_config, loaded = load_checkpoint(tmp_path)
    assert loaded_config == config
    expected = dict(_leaves(params))
    got = dict(_leaves(loaded))
    assert expected.keys() == got.keys()
    for key in expected:
        np.testing.assert_array_equal(got[key], expected[key], err_msg=key)
    # Stacked layers: the vision stages and the decoder carry a leading layer axis.
    assert loaded["language_model"]["layers"]["layer"]["q_proj"]["kernel"].shape == (3, 64, 4, 16)
    assert loaded["visual"]["stage_0"]["block"]["qkv"]["kernel"].shape == (1, 32, 3, 2, 16)


def test_bfloat16_checkpoint_is_read_without_torch(hf_tiny, tmp_path):
    """The released 4B checkpoint is bfloat16; safetensors' numpy backend reads it (ml_dtypes),
    and the converter casts to the requested dtype."""
    import copy

    import ml_dtypes

    hf, _, params = hf_tiny
    copy.deepcopy(hf).to(torch.bfloat16).save_pretrained(tmp_path)
    _, loaded = load_checkpoint(tmp_path, dtype=np.float32)
    for key, value in _leaves(params):
        rounded = np.asarray(value).astype(ml_dtypes.bfloat16).astype(np.float32)
        np.testing.assert_array_equal(dict(_leaves(loaded))[key], rounded, err_msg=key)


def test_missing_tensor_is_named(hf_tiny):
    hf, config, _ = hf_tiny
    state = dict(hf.state_dict())
    del state["model.language_model.layers.2.self_attn.k_norm.weight"]
    with pytest.raises(KeyError, match=r"model\.language_model\.layers\.2\.self_attn\.k_norm"):
        params_from_state_dict(state, config)


def test_misshaped_tensor_is_named(hf_tiny):
    hf, config, _ = hf_tiny
    state = dict(hf.state_dict())
    key = "model.visual.blocks.1.attn.qkv.weight"
    state[key] = torch.zeros(95, 32)
    with pytest.raises(
        ValueError, match=r"model\.visual\.blocks\.1\.attn\.qkv\.weight.*\(95, 32\)"
    ):
        params_from_state_dict(state, config)


def test_unused_tensor_is_named_in_strict_mode(hf_tiny):
    """A checkpoint with more layers than the config is refused, not silently truncated."""
    hf, config, _ = hf_tiny
    state = dict(hf.state_dict())
    state["model.language_model.layers.3.mlp.up_proj.weight"] = torch.zeros(128, 64)
    with pytest.raises(ValueError, match=r"layers\.3\.mlp\.up_proj"):
        params_from_state_dict(state, config)
    assert params_from_state_dict(state, config, strict=False) is not None


def test_config_from_4b_config_json_is_the_paper_preset():
    """The Hub's Qwen3-VL-4B-Instruct config.json (transformers 4.57 spelling; values from
    reward_dsrl_metrics.md §1.1) maps onto our `paper` sizes."""
    from vlaw.models.reward.qwen3_vl import Qwen3VLConfig

    hub = json.loads(
        """{"architectures": ["Qwen3VLForConditionalGeneration"], "model_type": "qwen3_vl",
        "image_token_id": 151655, "video_token_id": 151656, "vision_start_token_id": 151652,
        "vision_end_token_id": 151653, "tie_word_embeddings": true,
        "text_config": {"hidden_size": 2560, "num_hidden_layers": 36, "num_attention_heads": 32,
          "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 9728,
          "vocab_size": 151936, "rope_theta": 5000000, "rms_norm_eps": 1e-06,
          "rope_scaling": {"rope_type": "default", "mrope_section": [24, 20, 20],
                           "mrope_interleaved": true}, "tie_word_embeddings": true},
        "vision_config": {"depth": 24, "hidden_size": 1024, "num_heads": 16,
          "intermediate_size": 4096, "in_channels": 3, "patch_size": 16,
          "temporal_patch_size": 2, "spatial_merge_size": 2, "out_hidden_size": 2560,
          "num_position_embeddings": 2304, "deepstack_visual_indexes": [5, 11, 17],
          "model_type": "qwen3_vl"}}"""
    )
    paper = Qwen3VLConfig.paper()
    assert config_from_hf(hub, dtype=paper.dtype, remat_policy=paper.remat_policy) == paper
