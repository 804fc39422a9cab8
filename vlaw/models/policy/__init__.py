"""pi0.5 policy: SigLIP + multi-expert Gemma with a flow-matching action expert (openpi layout).

- `pi05.py`: `Pi05` (velocity, prefix KV cache), `Pi05Config` / `pi05_config(preset)`,
  `Observation`, `sample_actions` (jitted Euler sampler).
- `gemma.py`: `MultiExpertGemma`, the shared-attention transformer; `siglip.py`: the encoder.
- `tokenizer.py`: PaliGemma's SentencePiece with openpi's pi0.5 prompt and discretised state.
Training loss: `vlaw.losses.flow_matching_loss`; openpi import: `vlaw.convert.openpi`.
"""

from vlaw.models.policy.gemma import GemmaConfig, MultiExpertGemma
from vlaw.models.policy.pi05 import (
    Observation,
    Pi05,
    Pi05Config,
    abstract_params,
    fake_observation,
    init_params,
    make_attention_mask,
    pi05_config,
    sample_actions,
)
from vlaw.models.policy.siglip import SiglipConfig, SiglipEncoder
from vlaw.models.policy.tokenizer import PaligemmaTokenizer, discretize_state

__all__ = [
    "GemmaConfig",
    "MultiExpertGemma",
    "Observation",
    "PaligemmaTokenizer",
    "Pi05",
    "Pi05Config",
    "SiglipConfig",
    "SiglipEncoder",
    "abstract_params",
    "discretize_state",
    "fake_observation",
    "init_params",
    "make_attention_mask",
    "pi05_config",
    "sample_actions",
]
