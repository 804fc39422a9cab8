"""The losses of VLAW as pure functions of arrays, an rng and a model callable.

Research code imports this module alone: it depends on jax only (no Flax modules, no configs).
Each loss returns `(scalar_loss, metrics_dict)`.

- `flow_matching_loss`: the policy's weighted flow-matching objective (paper Eq. 4).
- `diffusion_loss`: the world model's video-diffusion objective (paper Eq. 1, Ctrl-World's
  EDM x0 parameterisation).
- `yes_no_loss`: the reward model's cross-entropy on the answer token (paper Eq. 3's P("yes")).
"""

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp


def flow_matching_loss(
    velocity_fn: Callable[[jax.Array, jax.Array], jax.Array],
    actions: jax.Array,
    rng: jax.Array,
    *,
    weights: jax.Array | None = None,
    action_mask: jax.Array | None = None,
    dim_groups: Mapping[str, jax.Array] | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Weighted flow-matching loss of the policy (paper Eq. 4) in openpi's conventions.

    Shapes: actions (B, H, A) (normalised, padded to A); `velocity_fn(x_t (B, H, A), t (B,))`
    returns v (B, H, A); weights (B,) non-negative (Eq. 4's w(o, a), binary success labels in
    VLAW); action_mask broadcastable to (B, H, A), True on real action dims (e.g. (A,) with the
    first 8 of 32 True for DROID).

    Convention (openpi, the reverse of the pi0 paper): t = 1 is noise, t = 0 is data;
    t ~ Beta(1.5, 1) * 0.999 + 0.001, which puts more steps near noise; x_t = t eps + (1 - t) a
    and the target velocity is u = eps - a, so an Euler integration from t = 1 with dt = -1/N
    lands on the data.

    Normalisation: per example the squared error is averaged over its valid (h, a) entries; the
    batch loss is the weighted average sum_i w_i l_i / sum_i w_i. Dividing by the weight sum (not
    by B) keeps the gradient scale, and so the effective learning rate, independent of how many
    examples in a batch carry weight (the success rate changes from iteration to iteration); it
    is the self-normalised estimate of Eq. 4's expectation under the reweighted data. A batch
    whose weights are all zero returns loss 0 with zero gradients rather than 0/0.

    dim_groups: name -> (A,) bool mask of action dims to report apart (e.g. "arm": the 7 joint
    velocities, "gripper": dim 7). Each adds a metric `loss_<name>`, the same weighted average
    restricted to those dims, whatever `action_mask` trains: with all 32 dims trained, the
    logged `loss` is mostly the easy zero padding, and these show what the real dims learn.

    Returns (loss, metrics): metrics holds `loss`, `unweighted_loss` (plain mean over the batch),
    `weight_sum` and one `loss_<name>` per dim group.
    """
    batch = actions.shape[0]
    # float32 throughout: in bf16, t near 1 would be quantised to steps of 2^-8.
    actions = actions.astype(jnp.float32)
    noise_rng, time_rng = jax.random.split(rng)
    noise = jax.random.normal(noise_rng, actions.shape, jnp.float32)
    t = jax.random.beta(time_rng, 1.5, 1.0, (batch,), jnp.float32) * 0.999 + 0.001
    t_b = t[:, None, None]
    x_t = t_b * noise + (1.0 - t_b) * actions
    target = noise - actions
    velocity = velocity_fn(x_t, t)
    sq_err = jnp.square(velocity.astype(jnp.float32) - target.astype(jnp.float32))

    if weights is None:
        weights = jnp.ones((batch,), jnp.float32)
    weights = weights.astype(jnp.float32)
    weight_sum = jnp.sum(weights)

    def weighted_mean(per_example: jax.Array) -> jax.Array:
        # where() so that a zero-weight example drops out exactly, even if its error is not finite.
        weighted = jnp.where(weights > 0, weights * per_example, 0.0)
        return jnp.sum(weighted) / jnp.maximum(weight_sum, 1e-8)

    per_example = _masked_mean_per_example(sq_err, action_mask)
    loss = weighted_mean(per_example)
    metrics = {
        "loss": loss,
        "unweighted_loss": jnp.mean(per_example),
        "weight_sum": weight_sum,
    }
    for name, dims in (dim_groups or {}).items():
        metrics[f"loss_{name}"] = weighted_mean(_masked_mean_per_example(sq_err, dims))
    return loss, metrics


def _masked_mean_per_example(sq_err: jax.Array, mask: jax.Array | None) -> jax.Array:
    """(B, H, A) squared errors -> (B,) means over the entries where `mask` (broadcast) is True."""
    if mask is None:
        return jnp.mean(sq_err, axis=(1, 2))
    mask = jnp.broadcast_to(mask, sq_err.shape)
    # where() rather than a product: a padded dim whose error is inf/NaN stays out.
    masked = jnp.where(mask, sq_err, 0.0)
    count = jnp.sum(mask.astype(jnp.float32), axis=(1, 2))
    return jnp.sum(masked, axis=(1, 2)) / jnp.maximum(count, 1.0)


def yes_no_loss(
    answer_logits: jax.Array,
    labels: jax.Array,
    *,
    yes_token_id: int,
    no_token_id: int,
    weights: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Cross-entropy of the reward model's first answer token: "yes" for a success, else "no".

    Fine-tuning on D_real's success labels (paper Appendix C) as next-token prediction of a
    one-token answer, over the full vocabulary, so that P("yes") read by `yes_probability` is
    the very quantity trained.

    Shapes: answer_logits (B, V) at the position after the prompt; labels (B,) bool or {0, 1};
    weights (B,) non-negative or None. Returns (loss, metrics) with `accuracy` of the two-way
    decision P(yes) > P(no) against the label and the mean full-vocabulary `p_yes`.
    """
    log_probs = jax.nn.log_softmax(answer_logits.astype(jnp.float32), axis=-1)
    log_yes, log_no = log_probs[:, yes_token_id], log_probs[:, no_token_id]
    success = labels.astype(bool)
    per_example = -jnp.where(success, log_yes, log_no)
    if weights is None:
        weights = jnp.ones(per_example.shape, jnp.float32)
    weights = weights.astype(jnp.float32)
    loss = jnp.sum(jnp.where(weights > 0, weights * per_example, 0.0)) / jnp.maximum(
        jnp.sum(weights), 1e-8
    )
    correct = (log_yes > log_no) == success
    metrics = {
        "loss": loss,
        "accuracy": jnp.mean(correct.astype(jnp.float32)),
        "p_yes": jnp.mean(jnp.exp(log_yes)),
    }
    return loss, metrics


def edm_preconditioning(sigma: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """SVD / Ctrl-World EDM preconditioning with sigma_data = 1: (c_skip, c_out, c_in, c_noise).

    D(x; sigma) = c_skip x + c_out F(c_in x, c_noise) with c_skip = 1/(sigma^2+1),
    c_out = -sigma/sqrt(sigma^2+1) (negative: F is then exactly the v-prediction target, which is
    what diffusers' Euler `v_prediction` step assumes), c_in = 1/sqrt(sigma^2+1),
    c_noise = ln(sigma)/4. As sigma -> 0, c_skip -> 1 and c_out -> 0: D returns its input.
    """
    sigma = sigma.astype(jnp.float32)
    c_skip = 1.0 / (sigma**2 + 1.0)
    c_out = -sigma * jax.lax.rsqrt(sigma**2 + 1.0)
    c_in = jax.lax.rsqrt(sigma**2 + 1.0)
    c_noise = 0.25 * jnp.log(sigma)
    return c_skip, c_out, c_in, c_noise


def diffusion_loss(
    network: Callable[[jax.Array, jax.Array, jax.Array], jax.Array],
    latents: jax.Array,
    rng: jax.Array,
    *,
    num_history: int,
    weights: jax.Array | None = None,
    p_mean: float = 0.7,
    p_std: float = 1.6,
    history_sigma_std: float = 0.3,
    condition_sigma_max: float = 0.2,
    condition_scale: float = 1.0,
    condition: jax.Array | None = None,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """The world model's objective (paper Eq. 1) as Ctrl-World trains SVD.

    Shapes: latents (B, T, H, W, C) clean (VAE-scaled) latents, the first `num_history` frames
    being memory and the rest the predicted chunk whose first frame is the current frame;
    weights (B,) per-example (Eq. 2's co-training: 1 for D_real, lambda for DROID);
    `network(model_input (B, T, H, W, C), condition (B, H, W, C), c_noise (B,))` returns the raw
    output F (B, T, H, W, C) (the caller closes over context, added time ids and parameters).

    - One sigma per example, ln sigma ~ N(p_mean, p_std^2) (Ctrl-World: 0.7, 1.6); future frames
      x = x0 + sigma eps enter the network as c_in x, and x0_hat = c_out F + c_skip x.
    - Memory frames are noised with their own sigma_h ~ N(0, history_sigma_std^2) per frame
      (Gaussian; only sigma_h^2 matters) as (h + sigma_h eps)/sqrt(sigma_h^2+1), unscaled by c_in.
    - The condition image is the current frame, augmented with s ~ U(0, condition_sigma_max) as
      (x + s eps)/sqrt(s^2+1), then multiplied by `condition_scale` (Ctrl-World: 1/0.18215, i.e.
      unscaled VAE units as SVD was trained). `condition` (B, H, W, C) replaces the current
      frame there when the diffused variable is not the frames themselves (e.g. residuals).
    - Loss: lambda(sigma) = (sigma^2+1)/sigma^2 times the squared x0 error, averaged over the
      future frames' elements, then the weighted mean over examples sum_i w_i l_i / sum_i w_i
      (the plain mean, as in Ctrl-World, when weights is None).
    """
    b = latents.shape[0]
    latents = latents.astype(jnp.float32)
    k_sigma, k_noise, k_hsigma, k_hnoise, k_csigma, k_cnoise = jax.random.split(rng, 6)

    def per_example(v):
        return v.reshape((b,) + (1,) * (latents.ndim - 1))

    sigma = jnp.exp(p_mean + p_std * jax.random.normal(k_sigma, (b,)))
    c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma)
    noisy = latents + per_example(sigma) * jax.random.normal(k_noise, latents.shape)

    history = latents[:, :num_history]
    sigma_h = history_sigma_std * jax.random.normal(
        k_hsigma, (b, num_history) + (1,) * (latents.ndim - 2)
    )
    history = (history + sigma_h * jax.random.normal(k_hnoise, history.shape)) * jax.lax.rsqrt(
        sigma_h**2 + 1.0
    )
    model_input = jnp.concatenate([history, per_example(c_in) * noisy[:, num_history:]], axis=1)

    current = latents[:, num_history] if condition is None else condition.astype(jnp.float32)
    s = condition_sigma_max * jax.random.uniform(k_csigma, (b,) + (1,) * (current.ndim - 1))
    condition = (current + s * jax.random.normal(k_cnoise, current.shape)) * jax.lax.rsqrt(s**2 + 1)
    condition = condition * condition_scale

    out = network(model_input, condition, c_noise).astype(jnp.float32)
    x0 = per_example(c_out) * out + per_example(c_skip) * noisy
    sq_err = jnp.square(x0[:, num_history:] - latents[:, num_history:])
    lam = (sigma**2 + 1.0) / sigma**2
    per_example_loss = lam * jnp.mean(sq_err, axis=tuple(range(1, sq_err.ndim)))
    w = jnp.ones((b,), jnp.float32) if weights is None else weights.astype(jnp.float32)
    loss = jnp.sum(w * per_example_loss) / jnp.maximum(jnp.sum(w), 1e-8)
    metrics = {
        "loss": loss,
        "x0_mse": jnp.mean(sq_err),
        "sigma_median": jnp.median(sigma),
        "loss_weight_mean": jnp.mean(lam),
    }
    return loss, metrics
