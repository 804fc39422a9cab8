"""Runs VLAW (Algorithm 1, by default) or one phase of one iteration from an experiment config.

  python launch.py --config=experiments/scoop.py:sim --workdir=runs/scoop_sim
  python launch.py --config=experiments/scoop.py:sim --workdir=runs/scoop_sim --phase=imagine \
      --iteration=1
  python launch.py --config=experiments/scoop.py --workdir=W --config.loop.iterations=3

Any `--config.a.b=value` overrides a field; an unknown field is an error. The resolved config
is written to <workdir>/config.json.
"""

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from vlaw import pipeline
from vlaw.train import mesh as mesh_lib
from vlaw.train import trainer

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file[:preset].")
_WORKDIR = flags.DEFINE_string("workdir", None, "Where checkpoints, datasets and reports go.")
_PHASE = flags.DEFINE_string(
    "phase",
    pipeline.LOOP,
    f"One phase of one iteration, one of {list(pipeline.PHASES)}; default: the whole loop.",
)
flags.register_validator(
    "phase",
    lambda name: name in pipeline.PHASE_NAMES,
    message=f"--phase must be one of {list(pipeline.PHASE_NAMES)}",
)
_ITERATION = flags.DEFINE_integer(
    "iteration", 0, "Iteration of --phase: 0 is the warm start (demos, base policy), then 1, 2..."
)
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
    try:
        if _PHASE.value == pipeline.LOOP:
            pipeline.run_loop(config, workdir, _FORCE.value)
        else:
            pipeline.run_phase(_PHASE.value, config, workdir, _ITERATION.value, _FORCE.value)
    except trainer.Preempted as preempted:  # a clean stop, not a crash: one line, no traceback
        logging.warning("%s", preempted)
        sys.exit(f"preempted: {preempted}")


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, with a misspelt `--config.a.b` override as one line instead of
    ml_collections' traceback (it raises AttributeError/KeyError from inside the parser)."""
    try:
        return flags.FLAGS(argv)
    except (AttributeError, KeyError) as error:
        overrides = [a.split("=")[0] for a in argv[1:] if a.startswith("--config.")]
        name = str(error).strip("\"'")
        culprit = next((o for o in overrides if name in o.split(".")), ", ".join(overrides))
        sys.exit(f"FATAL Flags parsing error: {culprit}: the config has no field {name!r}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
