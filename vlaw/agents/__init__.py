"""One runtime module per model, as an experiment configures it (between `vlaw.models` /
`vlaw.train` and the phases): config -> model config; `init_fn`, `loss_fn`, batch preparation
and `initial_params` for the trainer; a trained checkpoint directory saved and loaded with its
spec; the inference call.

- `policy`: pi0.5 (`TrainedPolicy`: observations -> action chunks).
- `world_model` (+ `world_model_codec`): Ctrl-World (`load_world_model` for imagination).
- `reward`: Qwen3-VL (`score_episodes`: P("yes") per episode).
"""
