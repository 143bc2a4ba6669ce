"""scm-train: train a diffusion teacher, sCT or sCD model.

    scm-train --config=embedded:sct --workdir=runs/sct [--config.train.steps=5000 ...]

Rerunning the same command in the same workdir resumes from its latest checkpoint. Multi-host: run the same
command on every host; `jax.distributed.initialize()` is called when a cluster is detected (SLURM under srun, a
Cloud TPU slice) or with --coordinator_address, --num_processes and --process_id (scm_jax.parallel.distributed;
launch scripts in launch/, docs/runbook.md).
"""
from absl import app, flags, logging
from ml_collections import config_flags

from scm_jax.cli.common import run_app
from scm_jax.parallel.distributed import initialize
from scm_jax.train.loop import train_and_evaluate
from scm_jax.train.validate import removed_on_failed_start

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config: a shipped name[:arg] (embedded:sct) or a file path[:arg].", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, logs and samples.")
_COORDINATOR = flags.DEFINE_string("coordinator_address", None, "host:port of process 0 (multi-host).")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "Number of processes (multi-host).")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "This process's index (multi-host).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; options are --flag=value.")
    initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
    logging.info("config:\n%s", _CONFIG.value)
    with removed_on_failed_start(_WORKDIR.value):
        train_and_evaluate(_CONFIG.value, _WORKDIR.value)


def run() -> None:
    run_app(main)


if __name__ == "__main__":
    run()
