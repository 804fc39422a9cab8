"""The losses of VLAW as pure functions of arrays, an rng and a model callable.

Research code imports this module alone: it depends on jax only (no Flax modules, no configs).
Each loss returns `(scalar_loss, metrics_dict)`.

- `flow_matching_loss`: the policy's weighted flow-matching objective (paper Eq. 4).
- `edm_diffusion_loss`: the world model's video-diffusion objective (paper Eq. 1, Ctrl-World's
  EDM x0 parameterisation).
- `yes_no_loss`: the reward model's cross-entropy on the answer token (paper Eq. 3's P("yes")).
"""
