"""Multi-host start-up: `jax.distributed.initialize` from explicit flags or a detected cluster."""
import os
from typing import Optional

import jax
from absl import logging

_CLUSTER_ENV = ("SLURM_JOB_ID", "TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS")


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> None:
    """Explicit flags win; else SLURM / TPU environments are auto-detected by jax; else single process."""
    if coordinator_address is not None:
        if num_processes is None or process_id is None:
            raise ValueError("--coordinator_address needs --num_processes and --process_id too.")
        jax.distributed.initialize(coordinator_address, num_processes, process_id)
    elif any(v in os.environ for v in _CLUSTER_ENV) and int(os.environ.get("SLURM_NTASKS", "2")) > 1:
        jax.distributed.initialize()
    else:
        return
    logging.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.device_count())
