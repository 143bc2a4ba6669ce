"""launch/: every script parses (`bash -n`), and the XLA flags the SLURM script sets are ones this jaxlib knows."""
import os
import re
import subprocess
import sys

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
