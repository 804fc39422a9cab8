"""The one place vlaw imports TensorFlow: CPU-only, imported on first use.

TensorFlow is a data-loading dependency here (tf.data, tensorflow-datasets), never a compute
one. Two reasons to funnel every import through this module:
- TensorFlow grabs all accelerator memory it can see at start-up; JAX needs that memory, so
  TensorFlow is told to see no GPU before anything else touches it (openpi does the same).
- TensorFlow's bundled LLVM clashes with MuJoCo's GL rendering in one process, so modules the
  simulator imports (`vlaw.data.droid`, `vlaw.data.episode`) must never import it; callers
  import it lazily, inside functions, through `import_tensorflow()`.
"""

import contextlib
import functools
import os
from types import ModuleType


@functools.cache
def import_tensorflow() -> ModuleType:
    """Returns the `tensorflow` module with every GPU hidden from it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    # RuntimeError: devices were already initialised (someone imported TF earlier and ran an
    # op); the setting can no longer change, and that earlier importer owns the consequence.
    with contextlib.suppress(RuntimeError):
        tf.config.set_visible_devices([], "GPU")
    return tf


@functools.cache
def import_tfds() -> ModuleType:
    """Returns `tensorflow_datasets`, after `import_tensorflow()` has hidden the GPUs."""
    import_tensorflow()
    import tensorflow_datasets as tfds

    return tfds
