"""PaliGemma's SentencePiece tokenizer with openpi's pi0.5 prompt format (openpi.md §1.6).

The prompt carries the robot state as text: the state, already normalised to about [-1, 1]
(quantile normalisation) and unpadded (8 dims for DROID), is cut into 256 equal bins over
[-1, 1] and written as space-separated integers:

    "Task: <prompt>, State: <b1 b2 ...>;\\nAction: "

encoded with BOS and without EOS, right-padded with id 0 to `max_len` (200 in openpi), mask
True on real tokens. The prompt is cleaned first: stripped, "_" and newlines become spaces (no
lowercasing in this path). The model file is PaliGemma's (`paligemma_tokenizer.model`, vocab
257 152); the user supplies its path.
"""

import logging

import numpy as np

NUM_STATE_BINS = 256


def discretize_state(state: np.ndarray) -> np.ndarray:
    """Normalised state (..., S) -> bin indices in [0, 255] (int), 256 bins over [-1, 1).

    Values below -1 give -1 and values at or above 1 give 255, as openpi's np.digitize does
    (the bins' right edge is open), so an out-of-range state is visible in the prompt.
    """
    edges = np.linspace(-1.0, 1.0, NUM_STATE_BINS + 1)[:-1]
    return np.digitize(np.asarray(state, np.float64), edges) - 1


def clean_prompt(prompt: str) -> str:
    return prompt.strip().replace("_", " ").replace("\n", " ")


def format_prompt(prompt: str, state: np.ndarray) -> str:
    """The pi0.5 text with discretised state: `Task: <prompt>, State: <bins>;\\nAction: `."""
    cleaned = clean_prompt(prompt)
    bins = " ".join(str(int(b)) for b in discretize_state(np.ravel(state)))
    return f"Task: {cleaned}, State: {bins};\nAction: "


class PaligemmaTokenizer:
    """tokenize(prompt, state) -> (tokens (max_len,) int32, mask (max_len,) bool)."""

    def __init__(self, model_path: str, max_len: int = 200):
        import sentencepiece

        self.max_len = max_len
        self._sp = sentencepiece.SentencePieceProcessor(model_file=str(model_path))

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def tokenize(
        self, prompt: str, state: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if state is None:
            # No state in the prompt (openpi's discrete_state_input=False, and pi0): the prompt,
            # then "\n" encoded on its own as the start-of-answer marker.
            body = self._sp.encode(clean_prompt(prompt)) + self._sp.encode("\n")
        else:
            body = self._sp.encode(format_prompt(prompt, state))
        ids = [self._sp.bos_id(), *body]
        if len(ids) > self.max_len:
            logging.warning(
                "prompt of %d tokens truncated to max_len=%d: %r", len(ids), self.max_len, prompt
            )
            ids = ids[: self.max_len]
        tokens = np.zeros(self.max_len, np.int32)  # pad id 0, as openpi
        tokens[: len(ids)] = ids
        mask = np.arange(self.max_len) < len(ids)
        return tokens, mask

    def tokenize_batch(
        self, prompts: list[str], states: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """prompts (B,), states (B, S) or None -> tokens (B, max_len) int32, mask (B, max_len)."""
        rows = [
            self.tokenize(p, None if states is None else states[i]) for i, p in enumerate(prompts)
        ]
        return np.stack([r[0] for r in rows]), np.stack([r[1] for r in rows])

    def decode(self, tokens: np.ndarray, mask: np.ndarray | None = None) -> str:
        """Text of the real tokens (mask True; all non-pad tokens if no mask), BOS dropped."""
        tokens = np.asarray(tokens)
        keep = np.asarray(mask, bool) if mask is not None else tokens != 0
        ids = [int(t) for t in tokens[keep] if int(t) != self._sp.bos_id()]
        return self._sp.decode(ids)
