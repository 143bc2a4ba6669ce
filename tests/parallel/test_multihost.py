"""Two CPU processes (4 fake devices each) train sCT through the real trainer; one process restores the result.

The two-process tests are `slow` (about 1.5 CPU-minutes; 3-5 wall-minutes on a busy 2-core machine).
Run as a script, this file is one worker: `python test_multihost.py PROCESS_ID PORT WORKDIR`.
"""
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jax.experimental import multihost_utils

from configs import embedded
from scm_jax.parallel import distributed
from scm_jax.parallel.mesh import make_mesh
from scm_jax.train import runs
from scm_jax.train.loop import data_loader, train_and_evaluate
from scm_jax.train.optim import make_optimizer
from scm_jax.train.state import make_setup

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = "sct,smoke"
WORKER_TIMEOUT_S = 540


def worker(process_id: int, port: int, workdir: str) -> None:
    """One of two processes: train CONFIG to the end, then process 0 writes the final params (all gathered).

    No persistent compilation cache here: a cached executable loaded by one process while the other compiles
    hung the two in their first collective (jax 0.10.2, CPU/gloo).
    """
    distributed.initialize(f"127.0.0.1:{port}", 2, process_id)
    state = train_and_evaluate(embedded.get_config(CONFIG), workdir)
    params = multihost_utils.process_allgather(state["params"], tiled=True)
    if process_id == 0:
        np.savez(os.path.join(workdir, "final_params.npz"), *jax.tree.leaves(params))


def run_two_processes(workdir: str) -> None:
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    port, logs = free_port(), [os.path.join(workdir, f"worker{i}.log") for i in range(2)]
    procs = [subprocess.Popen([sys.executable, __file__, str(i), str(port), workdir], env=env,
                              stdout=open(logs[i], "w"), stderr=subprocess.STDOUT) for i in range(2)]
    deadline = time.time() + WORKER_TIMEOUT_S
    while any(p.poll() is None for p in procs) and time.time() < deadline:
        if any(p.poll() not in (None, 0) for p in procs):  # one died: the other would wait for it forever
            break
        time.sleep(0.5)
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait()
    for p, log in zip(procs, logs):
        if p.returncode != 0:
            pytest.fail(f"worker exited with {p.returncode}; log {log}:\n" + open(log).read()[-5000:])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory) -> str:
    workdir = str(tmp_path_factory.mktemp("multihost"))
    run_two_processes(workdir)
    return workdir


@pytest.mark.slow  # ~100 s of CPU: two processes each compile the step, samplers and checkpointing
def test_two_processes_train_sample_and_checkpoint(two_process_run):
    config = runs.read_config(two_process_run)
    assert runs.checkpointer(config, two_process_run).latest_step() == config.train.steps
    assert sorted(os.listdir(os.path.join(two_process_run, "samples"))) == ["1step_0000006.png",
                                                                            "2step_0000006.png"]
    with open(os.path.join(two_process_run, "metrics.jsonl")) as fh:  # written once, by process 0
        assert len([line for line in fh if '"startup"' not in line]) == config.train.steps // config.train.log_every


@pytest.mark.slow
def test_one_process_restores_the_two_process_params_and_data_position(two_process_run):
    config = runs.read_config(two_process_run)
    setup = make_setup(config, make_mesh(-1, 1, 1), make_optimizer(config))
    step, state, data_state, _ = runs.checkpointer(config, two_process_run).restore(setup.abstract)
    final = np.load(os.path.join(two_process_run, "final_params.npz"))
    leaves = jax.tree.leaves(state["params"])
    assert step == config.train.steps and len(leaves) == len(final.files)
    for i, leaf in enumerate(leaves):
        np.testing.assert_array_equal(np.asarray(leaf), final[f"arr_{i}"])
    resumed, fresh = data_loader(config), data_loader(config)
    resumed.set_state(data_state)
    for _ in range(step):
        next(fresh)
    np.testing.assert_array_equal(next(resumed)["image"], next(fresh)["image"])  # the next global batch


@pytest.mark.slow
def test_two_processes_match_one_process(two_process_run, tmp_path):
    single = train_and_evaluate(embedded.get_config(CONFIG), str(tmp_path))
    final = np.load(os.path.join(two_process_run, "final_params.npz"))
    for i, leaf in enumerate(jax.tree.leaves(single["params"])):
        np.testing.assert_allclose(np.asarray(leaf), final[f"arr_{i}"], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("args, environ, expected", [
    (("h:1", 2, 1), {}, dict(coordinator_address="h:1", num_processes=2, process_id=1)),
    ((None, None, None), {}, None),
    ((None, None, None), {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}, None),
    ((None, None, None), {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "16", "SLURM_STEP_NODELIST": "n[1-2]",
                          "SLURM_STEP_TASKS_PER_NODE": "8(x2)", "SLURM_GPUS_ON_NODE": "8"}, {}),
    ((None, None, None), {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2", "SLURM_STEP_NODELIST": "n[1-2]",
                          "SLURM_STEP_TASKS_PER_NODE": "1(x2)", "SLURM_GPUS_ON_NODE": "8"},
     dict(local_device_ids=list(range(8)))),
    ((None, None, None), {"TPU_WORKER_HOSTNAMES": "a,b"}, {}),
])
def test_resolve_initialize_arguments(args, environ, expected):
    assert distributed.resolve(*args, environ) == expected


@pytest.mark.parametrize("args, environ, match", [
    (("h:1", None, 0), {}, "--num_processes=N"),
    (("h:1", 2, 2), {}, r"must lie in \[0"),
    ((None, None, None), {"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2"}, "srun"),
])
def test_resolve_errors_name_the_fix(args, environ, match):
    with pytest.raises(ValueError, match=match):
        distributed.resolve(*args, environ)


if __name__ == "__main__":
    worker(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
