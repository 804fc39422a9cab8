"""What the world-model benchmarks share: the matmul peak and the analytic FLOP count of one
UNet forward (diffusers' UNet with our config is `vlaw.convert.ctrl_world.diffusers_unet`).

Imported by `world_model_step.py` and `world_model_sample.py` (run as scripts from the
repository root, so this directory is on `sys.path`).
"""

from __future__ import annotations

import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from vlaw.models.world_model.unet import UNetConfig


def matmul_peak(on_gpu: bool) -> float:
    """FLOP/s of a large square matmul (bf16 on GPU, fp32 on CPU), median of repeats."""
    n, dtype, reps = (8192, jnp.bfloat16, 20) if on_gpu else (1024, jnp.float32, 5)
    a = jnp.ones((n, n), dtype)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        f(a).block_until_ready()
        times.append(time.perf_counter() - start)
    return 2 * n**3 / float(np.median(times))


def unet_forward_flops(
    cfg: UNetConfig, batch: int, frames: int, height: int, width: int, context_tokens: int = 1
) -> float:
    """FLOPs of one `UNetSpatioTemporal` forward over (batch, frames, height, width) latents.

    2 FLOPs per multiply-add of every convolution and dense layer plus the attention score and
    value products, walked through the same blocks as `unet.py`; norms, activations, softmax
    and the blends are left out. That is the convention of PyTorch's FlopCounterMode (the
    source of the peer figures in shared/research/device_measurements.md), and unlike XLA's
    cost analysis it does not depend on whether attention runs as a cuDNN custom call.
    `context_tokens`: cross-attention tokens per frame (Ctrl-World: one action+text token).
    """
    images = batch * frames  # spatial layers see every frame as an image
    temb, ctx_dim, ctx = cfg.time_embed_dim, cfg.cross_attention_dim, context_tokens
    # Time and added-id embeddings: once per sample.
    macs = batch * (cfg.block_out_channels[0] * temb + temb * temb)
    macs += batch * (cfg.num_added_ids * cfg.addition_time_embed_dim * temb + temb * temb)

    def conv(pixels: int, c_in: int, c_out: int, taps: int) -> int:
        return images * pixels * c_in * c_out * taps

    def resnet(pixels: int, c_in: int, c_out: int) -> int:
        spatial = conv(pixels, c_in, c_out, 9) + conv(pixels, c_out, c_out, 9)
        if c_in != c_out:
            spatial += conv(pixels, c_in, c_out, 1)  # conv_shortcut
        temporal = 2 * conv(pixels, c_out, c_out, 3)  # (3, 1, 1) kernels over time
        time_proj = 2 * images * temb * c_out  # time_emb_proj of both halves
        return spatial + temporal + time_proj

    def transformer(pixels: int, c: int) -> int:
        tokens = images * pixels
        linear = tokens * c * c
        feed_forward = 12 * linear  # GEGLU: c -> 8c, then 4c -> c
        # Spatial block: self-attention over the frame's pixels, cross-attention to its tokens.
        spatial = 4 * linear + 2 * tokens * pixels * c
        spatial += 2 * linear + 2 * images * ctx * ctx_dim * c + 2 * tokens * ctx * c
        spatial += feed_forward
        # Temporal block: ff_in, self-attention over the frames at each pixel, cross-attention
        # to frame 0's tokens (its keys and values projected once per pixel sequence).
        temporal = feed_forward + 4 * linear + 2 * tokens * frames * c
        temporal += 2 * linear + 2 * batch * pixels * ctx * ctx_dim * c + 2 * tokens * ctx * c
        temporal += feed_forward
        frame_embedding = frames * 8 * c * c  # time_pos_embed on the frame indices (c->4c->c)
        return 2 * linear + spatial + temporal + frame_embedding  # + proj_in, proj_out

    channels, levels = cfg.block_out_channels, len(cfg.block_out_channels)
    size = (height, width)
    macs += conv(height * width, cfg.in_channels, channels[0], 9)  # conv_in
    skips = [(channels[0], size)]
    c = channels[0]
    for level, out in enumerate(channels):
        for _ in range(cfg.layers_per_block):
            macs += resnet(math.prod(size), c, out)
            c = out
            if cfg.cross_attention_levels[level]:
                macs += transformer(math.prod(size), c)
            skips.append((c, size))
        if level < levels - 1:
            size = ((size[0] + 1) // 2, (size[1] + 1) // 2)  # 3x3, stride 2, padding 1
            macs += conv(math.prod(size), c, c, 9)
            skips.append((c, size))
    macs += 2 * resnet(math.prod(size), c, c) + transformer(math.prod(size), c)  # mid block
    for up in range(levels):
        level = levels - 1 - up
        out = channels[level]
        for _ in range(cfg.layers_per_block + 1):
            skip_channels, _ = skips.pop()
            macs += resnet(math.prod(size), c + skip_channels, out)
            c = out
            if cfg.cross_attention_levels[level]:
                macs += transformer(math.prod(size), c)
        if up < levels - 1:
            size = skips[-1][1]  # nearest upsampling to the next skip's size, then a 3x3 conv
            macs += conv(math.prod(size), c, c, 9)
    macs += conv(height * width, c, cfg.out_channels, 9)  # conv_out
    return 2.0 * macs
