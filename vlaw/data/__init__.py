"""RLDS data layer: DROID's schema, our episode metadata, readers, writers and tf.data windows.

TensorFlow is imported lazily, only by the modules that read or write RLDS (`rlds_read`,
`rlds_write`, `windows` and the per-model window builders), never by `droid` or `episode`: the
simulator's worker processes import those two and must not load TensorFlow, whose LLVM clashes
with MuJoCo's GL rendering (BUILD.md, "Known pitfalls").
"""
