"""launch/: every script parses (`bash -n`), the XLA flags the SLURM script sets are ones this jaxlib knows, and the
command line it starts (mesh.dcn from the nodes, the install extras)."""
import os
import re
import subprocess
import sys
from typing import Optional

import pytest

LAUNCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "launch")
SCRIPTS = sorted(os.path.join(root, name) for root, _, names in os.walk(LAUNCH) for name in names
                 if name.endswith((".sh", ".sbatch")))


def test_scripts_are_found():
    assert {os.path.relpath(s, LAUNCH) for s in SCRIPTS} >= {"slurm/train.sbatch", "tpu/run.sh"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda s: os.path.relpath(s, LAUNCH))
def test_script_parses(script):
    result = subprocess.run(["bash", "-n", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_tpu_script_without_a_command_prints_usage():
    result = subprocess.run(["bash", os.path.join(LAUNCH, "tpu", "run.sh")], capture_output=True, text=True,
                            env={**os.environ, "PROJECT": "p"})
    assert result.returncode == 2 and "usage:" in result.stderr


def test_xla_knows_every_gpu_flag_of_the_slurm_script():
    """XLA aborts on an unknown flag in XLA_FLAGS when its first backend starts (any backend parses them all)."""
    with open(os.path.join(LAUNCH, "slurm", "train.sbatch")) as fh:
        flags = re.findall(r"^\s+(--xla_\w+=\S+)$", fh.read(), flags=re.M)
    assert len(flags) >= 5
    env = {**os.environ, "XLA_FLAGS": " ".join(flags), "JAX_PLATFORMS": "cpu"}
    result = subprocess.run([sys.executable, "-c", "import jax; jax.devices()"], env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr[-2000:]


def sbatch_command(tmp_path, nodes: int, tasks_per_node: Optional[int], args: str = "") -> str:
    """The trainer command line the SLURM script hands to srun, with scontrol and srun stubbed on PATH."""
    for name, body in (("scontrol", "echo node001; echo node002"), ("srun", 'printf "%s\\n" "$@"')):
        stub = tmp_path / name
        stub.write_text(f"#!/bin/bash\n{body}\n")
        stub.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}:{os.environ['PATH']}", "WORKDIR": "/shared/run", "ARGS": args,
           "SLURM_JOB_NODELIST": "node[001-002]", "SLURM_JOB_ID": "1234", "SLURM_NNODES": str(nodes)}
    if tasks_per_node is not None:
        env["SLURM_NTASKS_PER_NODE"] = str(tasks_per_node)
    result = subprocess.run(["bash", os.path.join(LAUNCH, "slurm", "train.sbatch")], env=env, capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stderr
    return next(line for line in result.stdout.splitlines() if "scm_jax.cli.train" in line)


@pytest.mark.parametrize("nodes, tasks_per_node, dcn", [(4, None, 4), (4, 1, 4), (2, 8, 1), (1, None, 1)])
def test_sbatch_sets_mesh_dcn_from_the_nodes(tmp_path, nodes, tasks_per_node, dcn):
    command = sbatch_command(tmp_path, nodes, tasks_per_node)
    assert (f"python -m scm_jax.cli.train --config='configs/imagenet512.py:scd' --workdir='/shared/run' "
            f"--config.mesh.dcn={dcn} ") in command + " "


def test_sbatch_args_come_last_and_override_dcn(tmp_path):
    command = sbatch_command(tmp_path, 4, None, "--config.mesh.dcn=2 --config.train.microbatch=8")
    assert command.rstrip().endswith("--config.mesh.dcn=4 --config.mesh.dcn=2 --config.train.microbatch=8")


def test_install_lines_use_the_setup_extras():
    with open(os.path.join(LAUNCH, "tpu", "run.sh")) as fh:
        assert "pip install -q -e '.[tpu,gcs]'" in fh.read()
    with open(os.path.join(LAUNCH, "slurm", "train.sbatch")) as fh:
        assert "pip install -e '.[cuda12]'" in fh.read()
