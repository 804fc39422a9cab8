"""Qwen3-VL reward model (paper §4.1, Appendix C): P("yes") that a video shows the task done.

- `qwen3_vl.py`: `Qwen3VL`, `Qwen3VLConfig` (presets tiny/sim/paper), `mrope_position_ids`,
  `answer_logits`, `yes_probability`, `init_params`, `logical_param_specs`.
- `vision.py`: the ViT (patches, 2D RoPE, DeepStack, merger) and pixel preprocessing.
- `text.py`: the Qwen3 decoder with interleaved M-RoPE and DeepStack injection.
- `tokenizer.py`: the reward prompt, the small on-the-fly tokenizer, `prepare_inputs`.
- The checkpoint importer is `vlaw.convert.qwen3_vl`; the fine-tuning loss is
  `vlaw.losses.yes_no_loss`.
"""

from vlaw.models.reward.qwen3_vl import (
    Qwen3VL,
    Qwen3VLConfig,
    answer_logits,
    init_params,
    logical_param_specs,
    mrope_position_ids,
    yes_probability,
)

__all__ = [
    "Qwen3VL",
    "Qwen3VLConfig",
    "answer_logits",
    "init_params",
    "logical_param_specs",
    "mrope_position_ids",
    "yes_probability",
]
