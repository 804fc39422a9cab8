"""The reward prompt: chat layout, timestamps and placeholders as transformers' Qwen3-VL
processor writes them, and the small tokenizer's special tokens."""

from types import SimpleNamespace

import numpy as np
import pytest

from vlaw.models.reward.qwen3_vl import Qwen3VLConfig
from vlaw.models.reward.tokenizer import (
    SPECIAL_TOKENS,
    answer_token_ids,
    build_small_tokenizer,
    frame_timestamps,
    load_tokenizer,
    prepare_inputs,
    reward_prompt_ids,
    reward_question,
    sample_frame_indices,
    video_placeholder,
)


@pytest.fixture(scope="module")
def tokenizer():
    return build_small_tokenizer()


def test_special_tokens_take_the_ids_the_small_presets_assume(tokenizer):
    assert tokenizer.convert_tokens_to_ids(list(SPECIAL_TOKENS)) == list(range(14))
    config = Qwen3VLConfig.tiny()
    assert tokenizer.convert_tokens_to_ids("<|video_pad|>") == config.video_token_id
    assert tokenizer.convert_tokens_to_ids("<|vision_start|>") == config.vision_start_token_id
    assert tokenizer.convert_tokens_to_ids("<|vision_end|>") == config.vision_end_token_id
    assert len(tokenizer) <= config.text.vocab_size
    yes, no = answer_token_ids(tokenizer)
    assert tokenizer.decode([yes]) == "yes" and tokenizer.decode([no]) == "no"


def test_question_wording():
    assert reward_question("Scoop the beans into the bowl.") == (
        "Did the robot successfully scoop the beans into the bowl? Answer yes or no."
    )


def test_frames_and_timestamps_match_the_processor():
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    index = sample_frame_indices(100, 16)
    np.testing.assert_array_equal(index, np.linspace(0, 99, 16).round())
    assert len(set(index.tolist())) == 16 and index[0] == 0 and index[-1] == 99
    # `_calculate_timestamps` uses no processor state.
    theirs = Qwen3VLProcessor._calculate_timestamps(None, index.tolist(), 15.0, 2)
    np.testing.assert_allclose(frame_timestamps(index, 15.0), theirs)
    odd = [0, 3, 6]  # the last index is repeated to fill the final temporal patch
    np.testing.assert_allclose(
        frame_timestamps(odd, 2.0), Qwen3VLProcessor._calculate_timestamps(None, odd, 2.0, 2)
    )


def test_placeholder_matches_the_processor():
    """transformers' own per-video replacement string, driven with a stand-in processor."""
    torch = pytest.importorskip("torch")
    from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

    index = sample_frame_indices(40, 16)
    stand_in = SimpleNamespace(
        video_processor=SimpleNamespace(merge_size=2, temporal_patch_size=2),
        video_token="<|video_pad|>",
        vision_start_token="<|vision_start|>",
        vision_end_token="<|vision_end|>",
        _calculate_timestamps=lambda *a: Qwen3VLProcessor._calculate_timestamps(None, *a),
    )
    inputs = {
        "video_grid_thw": torch.tensor([[8, 6, 10]]),
        "video_metadata": [SimpleNamespace(fps=15.0, frames_indices=index.tolist())],
    }
    theirs = Qwen3VLProcessor.replace_video_token(stand_in, inputs, 0)
    assert video_placeholder(frame_timestamps(index, 15.0), 15) == theirs


def test_prompt_layout(tokenizer):
    stamps = frame_timestamps(sample_frame_indices(30, 16), 15.0)
    ids = reward_prompt_ids(tokenizer, "open the book", stamps, tokens_per_frame=4)
    text = tokenizer.decode(ids)
    expected = (
        "<|im_start|>user\n"
        + video_placeholder(stamps, 4)
        + "Did the robot successfully open the book? Answer yes or no.<|im_end|>\n"
        + "<|im_start|>assistant\n"
    )
    assert text == expected
    assert ids.count(tokenizer.convert_tokens_to_ids("<|video_pad|>")) == 8 * 4
    assert ids.count(tokenizer.convert_tokens_to_ids("<|vision_start|>")) == 8


def test_tokenizer_loaded_from_a_local_directory_gives_the_same_prompt(tokenizer, tmp_path):
    """The real Qwen tokenizer arrives as a directory read by transformers; the same path
    serves ours once saved."""
    tokenizer.save_pretrained(tmp_path)
    loaded = load_tokenizer(tmp_path)
    stamps = frame_timestamps(sample_frame_indices(30, 16), 15.0)
    assert reward_prompt_ids(loaded, "open the book", stamps, 4) == reward_prompt_ids(
        tokenizer, "open the book", stamps, 4
    )
    assert answer_token_ids(loaded) == answer_token_ids(tokenizer)


def test_prepare_inputs_shapes_and_padding(tokenizer):
    config = Qwen3VLConfig.tiny()  # frame factor 16
    rng = np.random.default_rng(0)
    trajectories = [rng.integers(0, 255, (n, 30, 50, 3), dtype=np.uint8) for n in (20, 45)]
    batch = prepare_inputs(tokenizer, trajectories, ["open the book", "erase"], config=config)
    assert batch["video"].shape == (2, 16, 32, 48, 3)  # resized to multiples of 16
    assert batch["video"].min() >= -1.0 and batch["video"].max() <= 1.0
    lengths = batch["attention_mask"].sum(1)
    assert lengths[0] > lengths[1]  # "open the book" is longer than "erase"
    assert (batch["input_ids"][1, lengths[1] :] == tokenizer.pad_token_id).all()
    video_tokens = (batch["input_ids"] == config.video_token_id).sum(1)
    np.testing.assert_array_equal(video_tokens, [8 * 2 * 3] * 2)  # 8 groups of 2x3 tokens
    with pytest.raises(ValueError, match="exceeds length"):
        prepare_inputs(tokenizer, trajectories, ["a", "b"], config=config, length=10)
