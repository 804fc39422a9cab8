"""Shared fixtures of the reward-model tests: transformers' Qwen3-VL at the tiny parity size
(the verified recipe of shared/research/reward_dsrl_metrics.md §1.10) and one variant of it,
their weights randomised, and the same weights moved into our parameters by our converter."""

import pytest

VIDEO, START, END = 6, 3, 4  # small special-token ids, inside the 64-token vocabulary


def hf_tiny_config(text: dict | None = None, vision: dict | None = None):
    """The tiny parity config; `text` / `vision` override fields of its sub-configs."""
    from transformers import Qwen3VLConfig

    config = Qwen3VLConfig(
        image_token_id=5,
        video_token_id=VIDEO,
        vision_start_token_id=START,
        vision_end_token_id=END,
        tie_word_embeddings=True,
        text_config=dict(
            hidden_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            intermediate_size=128,
            vocab_size=64,
            rope_parameters={
                "rope_type": "default",
                "rope_theta": 5e6,
                "mrope_section": [4, 2, 2],
                "mrope_interleaved": True,
            },
        )
        | (text or {}),
        vision_config=dict(
            depth=4,
            hidden_size=32,
            num_heads=2,
            intermediate_size=64,
            patch_size=4,
            temporal_patch_size=2,
            spatial_merge_size=2,
            out_hidden_size=64,
            num_position_embeddings=16,
            deepstack_visual_indexes=[0, 1, 2],
        )
        | (vision or {}),
    )
    config._attn_implementation = "eager"
    return config


def _build(hf_config):
    """(transformers model, our config, our params) with all tensors random."""
    torch = pytest.importorskip("torch")
    from transformers import Qwen3VLForConditionalGeneration

    from vlaw.convert.qwen3_vl import config_from_hf, params_from_state_dict

    torch.manual_seed(0)
    hf = Qwen3VLForConditionalGeneration(hf_config).eval()
    # Randomise every tensor (norm weights and biases included), so that no parameter can be
    # mapped wrongly and still look right because it is all ones or zeros.
    with torch.no_grad():
        for p in hf.parameters():
            p.copy_(torch.randn_like(p) * 0.3 + (0.5 if p.ndim == 1 else 0.0))
    config = config_from_hf(hf_config.to_dict())
    return hf, config, params_from_state_dict(hf.state_dict(), config)


@pytest.fixture(scope="session")
def hf_tiny():
    return _build(hf_tiny_config())


@pytest.fixture(scope="session")
def hf_tiny_unsorted_gqa():
    """The tiny model with the configurations the default one leaves untested: DeepStack taps
    listed out of block order ([2, 0]: block 0's tap goes through merger 1 and still feeds text
    layer 0), 3 KV heads shared by pairs of 6 query heads, and heads x head_dim = 6 x 24 = 144
    != the width 64 (q/o projections are not square)."""
    text = dict(
        num_attention_heads=6,
        num_key_value_heads=3,
        head_dim=24,
        rope_parameters={
            "rope_type": "default",
            "rope_theta": 5e6,
            "mrope_section": [4, 4, 4],
            "mrope_interleaved": True,
        },
    )
    return _build(hf_tiny_config(text=text, vision=dict(deepstack_visual_indexes=[2, 0])))
