"""Multi-host start-up: `jax.distributed.initialize` from explicit flags, SLURM or a Cloud TPU slice.

Call `initialize` first thing in a binary, before anything touches a device. Resolution order:
  1. explicit `coordinator_address` + `num_processes` + `process_id` (flags `--coordinator_address` ...);
  2. SLURM inside `srun` with more than one task: jax reads SLURM_* (coordinator = first node of the step).
     One task per node drives every GPU of its node (`local_device_ids` = all of SLURM_GPUS_ON_NODE);
     one task per GPU drives GPU SLURM_LOCALID;
  3. a Cloud TPU VM (libtpu and TPU chips present) or a GKE TPU pod: jax reads the TPU metadata;
  4. otherwise one process, nothing to do.
Set JAX_LOCAL_DEVICE_IDS=0,1,... to override which local GPUs a process uses (jax reads it).
"""
import glob
import importlib.util
import os
import re
from typing import Mapping, Optional

import jax
from absl import logging

_GKE_TPU_ENV = ("TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES", "MEGASCALE_COORDINATOR_ADDRESS")


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None) -> None:
    """Starts the distributed runtime when the flags or the environment say there are several processes."""
    if jax.distributed.is_initialized():
        return
    kwargs = resolve(coordinator_address, num_processes, process_id, os.environ, tpu_vm=_tpu_chips_present())
    if kwargs is None:
        return
    jax.distributed.initialize(**kwargs)
    logging.info("process %d of %d, %d local / %d global devices", jax.process_index(), jax.process_count(),
                 jax.local_device_count(), jax.device_count())


def resolve(coordinator_address: Optional[str], num_processes: Optional[int], process_id: Optional[int],
            environ: Mapping[str, str], tpu_vm: bool = False) -> Optional[dict]:
    """kwargs for `jax.distributed.initialize` (empty: jax auto-detects), or None for a single process."""
    explicit = (coordinator_address, num_processes, process_id)
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise ValueError("multi-host flags go together: pass --coordinator_address=HOST:PORT, "
                             "--num_processes=N and --process_id=I (0 <= I < N) on every process.")
        if not 0 <= process_id < num_processes:
            raise ValueError(f"--process_id={process_id} must lie in [0, --num_processes={num_processes}).")
        return dict(coordinator_address=coordinator_address, num_processes=num_processes, process_id=process_id)
    if "SLURM_JOB_ID" in environ and int(environ.get("SLURM_NTASKS", "1")) > 1:
        return _slurm(environ)
    if tpu_vm or any(v in environ for v in _GKE_TPU_ENV):
        return {}
    return None


def _slurm(environ: Mapping[str, str]) -> dict:
    if "SLURM_STEP_NODELIST" not in environ:
        raise ValueError(f"SLURM job with {environ['SLURM_NTASKS']} tasks but no job step: start the trainer "
                         "with `srun scm-train ...` (launch/slurm/train.sbatch), not directly in the batch script.")
    gpus = environ.get("SLURM_GPUS_ON_NODE")
    if _tasks_on_this_node(environ) == 1 and gpus and "JAX_LOCAL_DEVICE_IDS" not in environ:
        return dict(local_device_ids=list(range(int(gpus))))  # one process drives every GPU of its node
    return {}  # jax: one process per GPU, GPU SLURM_LOCALID


def _tasks_on_this_node(environ: Mapping[str, str]) -> int:
    """Tasks of the step on this node: SLURM_TASKS_PER_NODE looks like '8(x2)' or '2,1'; take this node's."""
    if "SLURM_NTASKS_PER_NODE" in environ:
        return int(environ["SLURM_NTASKS_PER_NODE"])
    spec = environ.get("SLURM_STEP_TASKS_PER_NODE") or environ.get("SLURM_TASKS_PER_NODE", "1")
    counts = []
    for count, repeat in re.findall(r"(\d+)(?:\(x(\d+)\))?", spec):
        counts += [int(count)] * int(repeat or 1)
    node = int(environ.get("SLURM_NODEID", "0"))
    return counts[node] if node < len(counts) else counts[-1]


def _tpu_chips_present() -> bool:
    """A Cloud TPU VM: libtpu installed and TPU chips exposed (/dev/accel* on v2-v4, /dev/vfio/N on v5+)."""
    chips = glob.glob("/dev/accel[0-9]*") + glob.glob("/dev/vfio/[0-9]*")
    return bool(chips) and importlib.util.find_spec("libtpu") is not None
