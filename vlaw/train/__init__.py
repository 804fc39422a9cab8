"""The generic trainer shared by pi0.5, Ctrl-World and the Qwen3-VL reward model.

- `trainer.train(...)`: the loop (sharded init, jitted step, orbax resume, SIGTERM, metrics).
- `mesh`: the ("data", "fsdp", "tensor") mesh, logical-axis rules, global batches.
- `optim`: AdamW + warmup-cosine + clipping, trainable masks, bf16 compute casts, EMA.
- `checkpoints`: orbax managers, shape-checked restore, `init_from` parameter import.

Submodules are imported explicitly (`from vlaw.train import trainer`), keeping
`import vlaw.train` free of orbax and tqdm for code that only needs the mesh helpers.
"""
