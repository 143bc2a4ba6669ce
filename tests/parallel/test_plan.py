"""scm-plan: the full sCD train step compiles from abstract inputs on 8 fake devices; batch search; bad input."""
import importlib.util
import os
import subprocess
import sys

import pytest

from configs import imagenet512
from scm_jax.cli.plan import GIB, Compiled, Planner, largest_fitting, plan_devices
from scm_jax.parallel.mesh import mesh_from_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_smoke_scd_step_reports_memory_and_flops():
    config = imagenet512.get_config("scd,smoke")
    config.model.depth = 1
    planner = Planner(config, mesh_from_config(config.mesh))
    assert planner.dp == 8 and planner.teacher  # 8-way FSDP, the teacher's parameters are an input
    c = planner.compile(2)
    assert c.global_batch == 16 and c.flops > 0 and c.temp > 0
    assert 0 < c.alias <= c.argument and c.total > 0  # the donated state is aliased to the new state


def _fake(memory):
    calls = []

    def compile_at(b):
        calls.append(b)
        return Compiled(b, 8 * b, int(memory(b)), 0, 0, 0, 1.0, 0.0)
    return compile_at, calls


def test_largest_fitting_extrapolates_and_checks():
    compile_at, calls = _fake(lambda b: (10 + 3 * b) * GIB)
    best, runs = largest_fitting(compile_at, 80 * GIB, 4, 8)
    assert best == 23 and calls == [4, 8, 23] and runs[-1].total <= 80 * GIB


def test_largest_fitting_steps_down_when_the_line_is_optimistic():
    compile_at, calls = _fake(lambda b: (10 + 3 * b + 0.2 * max(0, b - 8) ** 2) * GIB)
    best, _ = largest_fitting(compile_at, 80 * GIB, 4, 8)
    assert (10 + 3 * best + 0.2 * max(0, best - 8) ** 2) <= 80 and calls[:3] == [4, 8, 23] and len(calls) > 3


def test_largest_fitting_reports_nothing_fits():
    compile_at, _ = _fake(lambda b: (90 + b) * GIB)
    assert largest_fitting(compile_at, 80 * GIB, 1, 2)[0] == 0


def _plan(*args):
    return subprocess.run([sys.executable, "-m", "scm_jax.cli.plan", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize("args, message", [
    (["--config=configs/nope.py"], "nope.py"),
    (["--config=configs/imagenet512.py:scd,smoke", "--devices=4", "--config.mesh.fsdp=8"],
     "uses 8 devices but each of the 1 slice(s) has 4"),
    (["--config=configs/imagenet512.py:scd,smoke", "--config.mesh.rules=zero3"], "mesh.rules='zero3' is unknown"),
])
def test_bad_input_is_one_clear_error(args, message):
    result = _plan(*args)
    assert result.returncode != 0 and message in result.stderr, result.stderr[-2000:]


@pytest.mark.skipif(importlib.util.find_spec("libtpu") is not None, reason="libtpu is installed")
def test_topology_without_libtpu_names_the_install():
    with pytest.raises(ValueError, match="install libtpu"):
        plan_devices("v5p:2x2x2", num_slices=1)
