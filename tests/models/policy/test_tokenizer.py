"""The pi0.5 prompt format with discretised state, on a SentencePiece model trained here."""

import numpy as np
import pytest

from vlaw.models.policy.tokenizer import (
    PaligemmaTokenizer,
    clean_prompt,
    discretize_state,
    format_prompt,
)

spm = pytest.importorskip("sentencepiece")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    # Special ids as in PaliGemma's model (pad 0, eos 1, bos 2, unk 3); byte fallback so digits,
    # punctuation and "\n" always encode; identity normalisation and no dummy prefix (as in
    # Gemma's tokenizer) so decoding is exact.
    tmp = tmp_path_factory.mktemp("spm")
    corpus = tmp / "corpus.txt"
    lines = [
        "Task: pick up the red cup, State: 0 12 127 128 255;",
        "Action: scoop the beans into the bowl and stack the blocks",
        "open the book, erase the board, draw a circle",
    ] * 20
    corpus.write_text("\n".join(lines))
    spm.SentencePieceTrainer.train(
        input=str(corpus),
        model_prefix=str(tmp / "tok"),
        vocab_size=320,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        bos_id=2,
        unk_id=3,
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        hard_vocab_limit=False,
        minloglevel=2,
    )
    return str(tmp / "tok.model")


def test_discretize_state_bins():
    # 256 bins of width 2/256 over [-1, 1); below -1 -> -1, 1 and above -> 255 (np.digitize).
    state = np.array([-1.5, -1.0, -0.001, 0.0, 0.5, 0.999, 1.0, 3.0])
    np.testing.assert_array_equal(discretize_state(state), [-1, 0, 127, 128, 192, 255, 255, 255])


def test_format_prompt_matches_openpi_layout():
    state = np.array([-1.0, -0.001, 0.0, 0.999])
    text = format_prompt("  pick_up the\ncup ", state)
    assert text == "Task: pick up the cup, State: 0 127 128 255;\nAction: "
    assert clean_prompt("a_b\nc") == "a b c"


def test_tokenize_roundtrip_padding_and_bos(model_path):
    tok = PaligemmaTokenizer(model_path, max_len=96)
    state = np.array([0.1, -0.7, 0.95, -0.2, 0.0, 0.33, -1.0, 0.5], np.float32)
    tokens, mask = tok.tokenize("scoop_the beans", state)
    assert tokens.shape == mask.shape == (96,) and tokens.dtype == np.int32
    n = int(mask.sum())
    assert mask[:n].all() and not mask[n:].any()  # right padding
    assert tokens[0] == 2 and (tokens[n:] == 0).all() and (tokens[:n] != 0).all()
    assert 1 not in tokens[:n]  # no EOS
    assert tok.decode(tokens, mask) == format_prompt("scoop_the beans", state)
    assert "State: 140 38 249 102 128 170 0 192;\nAction: " in tok.decode(tokens, mask)


def test_tokenize_without_state_and_truncation(model_path):
    tok = PaligemmaTokenizer(model_path, max_len=64)
    tokens, mask = tok.tokenize("draw a circle")
    assert tok.decode(tokens, mask) == "draw a circle\n"

    short = PaligemmaTokenizer(model_path, max_len=5)
    tokens, mask = short.tokenize("open the book", np.zeros(8))
    assert mask.all() and tokens[0] == 2
    full, full_mask = tok.tokenize("open the book", np.zeros(8))
    np.testing.assert_array_equal(tokens, full[:5])


def test_tokenize_batch(model_path):
    tok = PaligemmaTokenizer(model_path, max_len=80)
    states = np.stack([np.zeros(8), np.full(8, 0.5)])
    tokens, mask = tok.tokenize_batch(["stack the blocks", "erase the board"], states)
    assert tokens.shape == mask.shape == (2, 80)
    assert tok.decode(tokens[1], mask[1]).startswith("Task: erase the board, State: 192 192")
