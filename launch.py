"""Runs VLAW (or one of its phases) from an experiment config.

  python launch.py --config=experiments/scoop.py:sim --workdir=runs/scoop_sim --phase=collect
  python launch.py --config=experiments/scoop.py --workdir=W --config.loop.iterations=3

Any `--config.a.b=value` overrides a field; an unknown field is an error. The resolved config
is written to <workdir>/config.json.
"""

import os

from absl import app, flags, logging
from ml_collections import config_flags

from vlaw import pipeline
from vlaw.train import mesh as mesh_lib

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:preset].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, datasets and reports go.")
_PHASE = flags.DEFINE_string(
    "phase",
    pipeline.default_phase(),
    f"Phase to run, one of {list(pipeline.PHASES)}; default: the newest.",
)
flags.register_validator(
    "phase",
    lambda name: name in pipeline.PHASES,
    message=f"--phase must be one of {list(pipeline.PHASES)}",
)
_ITERATION = flags.DEFINE_integer("iteration", 0, "VLAW iteration the phase belongs to.")
_FORCE = flags.DEFINE_bool("force", False, "Rerun a phase that state.json marks done.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    config = _CONFIG.value
    # Resolved once, here: orbax refuses relative checkpoint paths, and a relative path would
    # mean something else to any code that changes directory.
    workdir = os.path.abspath(os.path.expanduser(_WORKDIR.value))
    # The one place a multi-host job is joined (config.mesh.distributed), before any phase
    # touches a device.
    mesh_lib.maybe_initialize_distributed(config.mesh)
    logging.info("config written to %s", pipeline.write_config(config, workdir))
    pipeline.run_phase(_PHASE.value, config, workdir, _ITERATION.value, _FORCE.value)


if __name__ == "__main__":
    app.run(main)
