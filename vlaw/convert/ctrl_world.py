"""Import PyTorch weights (Ctrl-World's released checkpoint, diffusers SVD UNet and VAE) into vlaw.

Sources of the key layout (third_party/README.md, section "Ctrl-World / SVD"):
- `yjguo/Ctrl-World` `checkpoint-10000.pt`: `torch.save(model.state_dict())` of the whole
  `CrtlWorld` module, fp32. Prefixes: `unet.` (diffusers SVD UNet names), `vae.` (diffusers
  `AutoencoderKLTemporalDecoder`), `action_encoder.action_encode.{0,2,4}.{weight,bias}`,
  `text_encoder.` (CLIP ViT-B/32 text tower with projection), `image_encoder.` (unused).
- `stabilityai/stable-video-diffusion-img2vid`: `unet/` and `vae/` in diffusers names without a
  prefix.

The mapping is mechanical because vlaw's module names mirror diffusers': a Flax path
`down_blocks_0/resnets_1/spatial_res_block/conv1/kernel` is the key
`down_blocks.0.resnets.1.spatial_res_block.conv1.weight`. Leaves: Dense `kernel` (in, out) <-
Linear `weight` (out, in); Conv `kernel` (*taps, in, out) <- Conv2d/3d `weight` (out, in, *taps);
norm `scale` <- `weight`; `bias` and `mix_factor` as they are.

Every expected parameter must be present with the expected shape: a missing key raises
`KeyError` and a mis-shaped one `ValueError`, both naming the PyTorch key. Keys under the
converted prefix that vlaw does not use raise too (strict), so a layout drift is never silent.

torch is imported only inside `load_torch_state_dict` (vlaw itself never imports torch), and
diffusers only inside `diffusers_unet`; the converters take any mapping of arrays or tensors.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# diffusers/PyTorch containers whose children are numbered (`resnets.0`); in Flax they are
# one name joined with '_' (`resnets_0`). Names like `linear_1` are not containers.
_NUMBERED_CONTAINERS = (
    "down_blocks",
    "up_blocks",
    "resnets",
    "attentions",
    "downsamplers",
    "upsamplers",
    "transformer_blocks",
    "temporal_transformer_blocks",
    "to_out",
    "net",
    "action_encode",
)


def torch_key(flax_path: tuple[str, ...]) -> str:
    """Flax parameter path -> diffusers / PyTorch state-dict key."""
    parts = []
    for name in flax_path[:-1]:
        head, _, index = name.rpartition("_")
        if head in _NUMBERED_CONTAINERS and index.isdigit():
            parts += [head, index]
        else:
            parts.append(name)
    leaf = flax_path[-1]
    parts.append({"kernel": "weight", "scale": "weight"}.get(leaf, leaf))
    return ".".join(parts)


def _to_numpy(tensor: Any) -> np.ndarray:
    if hasattr(tensor, "detach"):  # a torch tensor; bf16/fp16 go through float32
        tensor = tensor.detach().cpu().float().numpy()
    return np.asarray(tensor, dtype=np.float32)


def _to_flax_layout(array: np.ndarray, leaf: str) -> np.ndarray:
    if leaf != "kernel":
        return array
    if array.ndim == 2:  # Linear (out, in) -> Dense (in, out)
        return array.T
    # Conv (out, in, *taps) -> (*taps, in, out)
    return np.transpose(array, tuple(range(2, array.ndim)) + (1, 0))


def convert_state_dict(
    state_dict: Mapping[str, Any],
    target: Any,
    prefix: str = "",
    strict: bool = True,
) -> dict:
    """Fill the parameter tree `target` (arrays or ShapeDtypeStructs) from `state_dict`.

    `prefix` is prepended to every key (`"unet."` for Ctrl-World's checkpoint). With `strict`,
    state-dict keys under `prefix` that no parameter uses are an error.
    """
    flat = flax.traverse_util.flatten_dict(nn.unbox(target))
    out, used = {}, set()
    for path, leaf in flat.items():
        key = prefix + torch_key(path)
        if key not in state_dict:
            raise KeyError(f"missing key {key!r} (for vlaw parameter {'/'.join(path)})")
        array = _to_flax_layout(_to_numpy(state_dict[key]), path[-1])
        if tuple(array.shape) != tuple(leaf.shape):
            raise ValueError(
                f"wrong shape for {key!r}: got {tuple(array.shape)} after layout conversion, "
                f"vlaw parameter {'/'.join(path)} expects {tuple(leaf.shape)}"
            )
        out[path] = jnp.asarray(array, dtype=leaf.dtype)
        used.add(key)
    if strict:
        unused = sorted(k for k in state_dict if k.startswith(prefix) and k not in used)
        if unused:
            raise ValueError(
                f"{len(unused)} unexpected keys under prefix {prefix!r}, e.g. {unused[:5]}"
            )
    return flax.traverse_util.unflatten_dict(out)


def torch_layout_shapes(target: Any, prefix: str = "") -> dict[str, tuple[int, ...]]:
    """The PyTorch key -> shape table a state dict must have to convert into `target`.

    Checks a checkpoint's layout from its header alone (safetensors metadata, a meta-device
    model) without reading any tensor.
    """
    shapes = {}
    for path, leaf in flax.traverse_util.flatten_dict(nn.unbox(target)).items():
        shape = tuple(leaf.shape)
        if path[-1] == "kernel":
            # (in, out) -> (out, in); (*taps, in, out) -> (out, in, *taps)
            shape = shape[::-1] if len(shape) == 2 else (shape[-1], shape[-2], *shape[:-2])
        shapes[prefix + torch_key(path)] = shape
    return shapes


def param_shapes(module: nn.Module, *example_args) -> Any:
    """Parameter ShapeDtypeStructs of `module` for example inputs, without allocating them."""
    shapes = jax.eval_shape(module.init, jax.random.key(0), *example_args)
    return nn.unbox(shapes["params"])


def convert_unet(state_dict: Mapping[str, Any], config, prefix: str = "") -> dict:
    """diffusers `UNetSpatioTemporalConditionModel` weights -> `UNetSpatioTemporal` params."""
    from vlaw.models.world_model.unet import UNetSpatioTemporal

    side = 2 ** (len(config.block_out_channels) - 1)
    args = (
        jnp.zeros((1, 1, side, side, config.in_channels)),
        jnp.zeros((1,)),
        jnp.zeros((1, 1, 1, config.cross_attention_dim)),
        jnp.zeros((1, config.num_added_ids)),
    )
    return convert_state_dict(state_dict, param_shapes(UNetSpatioTemporal(config), *args), prefix)


def diffusers_unet(config, num_frames: int = 25):
    """diffusers' `UNetSpatioTemporalConditionModel` with the hyper-parameters of our
    `UNetConfig` (random init, fp32, CPU; the caller seeds torch): the model whose state dict
    `convert_unet` reads. Parity tests and benchmarks build their reference with it."""
    import diffusers

    kinds = [
        "CrossAttnDownBlockSpatioTemporal" if a else "DownBlockSpatioTemporal"
        for a in config.cross_attention_levels
    ]
    return diffusers.UNetSpatioTemporalConditionModel(
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        down_block_types=tuple(kinds),
        up_block_types=tuple(k.replace("Down", "Up") for k in reversed(kinds)),
        block_out_channels=config.block_out_channels,
        addition_time_embed_dim=config.addition_time_embed_dim,
        projection_class_embeddings_input_dim=config.num_added_ids * config.addition_time_embed_dim,
        layers_per_block=config.layers_per_block,
        transformer_layers_per_block=config.transformer_layers_per_block,
        cross_attention_dim=config.cross_attention_dim,
        num_attention_heads=config.num_attention_heads,
        num_frames=num_frames,
    )


def convert_vae(state_dict: Mapping[str, Any], config, prefix: str = "") -> dict:
    """diffusers `AutoencoderKLTemporalDecoder` weights -> `TemporalVAE` params."""
    from vlaw.models.world_model.vae import TemporalVAE

    side = 2 ** (len(config.block_out_channels) - 1)
    args = (jnp.zeros((1, side, side, config.in_channels)),)
    return convert_state_dict(state_dict, param_shapes(TemporalVAE(config), *args), prefix)


def convert_ctrl_world(state_dict: Mapping[str, Any], config) -> dict:
    """Ctrl-World `checkpoint-10000.pt` (whole-module state dict) -> `CtrlWorld` params.

    Returns {"unet": ..., "action_encoder": ...}; the VAE is converted separately with
    `convert_vae(state_dict, vae_config, prefix="vae.")` since vlaw keeps it a separate model.
    """
    from vlaw.models.world_model.ctrl_world import ActionEncoder

    action_target = param_shapes(
        ActionEncoder(config.hidden_dim), jnp.zeros((1, 1, config.action_dim))
    )
    return {
        "unet": convert_unet(state_dict, config.unet, prefix="unet."),
        "action_encoder": convert_state_dict(state_dict, action_target, prefix="action_encoder."),
    }


def load_torch_state_dict(path: str) -> dict[str, np.ndarray]:
    """Read a `.pt` pickle (weights only) or `.safetensors` file into float32 numpy arrays."""
    if path.endswith(".safetensors"):
        from safetensors.numpy import load_file

        return {k: v.astype(np.float32) for k, v in load_file(path).items()}
    import torch  # only here: the converter is the one place vlaw touches torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    return {k: _to_numpy(v) for k, v in state.items()}


def clip_text_embeddings(
    instructions,
    model_path: str = "openai/clip-vit-base-patch32",
    tokenizer=None,
    text_model=None,
) -> np.ndarray:
    """Frozen CLIP ViT-B/32 `text_embeds` per instruction: list of N strings -> (N, 512).

    Exactly Ctrl-World's text path: `CLIPTextModelWithProjection` with the slow tokenizer,
    `padding='max_length'` (77) and `truncation=True`. vlaw stores these vectors at conversion
    time instead of running the tower (ctrl_world.py's docstring says why). `tokenizer` /
    `text_model` override the downloads (tests pass tiny ones).
    """
    import torch
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    if tokenizer is None:
        tokenizer = AutoTokenizer.from_pretrained(model_path, use_fast=False)
    if text_model is None:
        text_model = CLIPTextModelWithProjection.from_pretrained(model_path)
    inputs = tokenizer(
        list(instructions), padding="max_length", truncation=True, return_tensors="pt"
    )
    with torch.no_grad():
        return text_model.eval()(**inputs).text_embeds.float().numpy()
