"""scm-plan: the full sCD train step compiles from abstract inputs on 8 fake devices and, by XLA:GPU without a
GPU, on A100 nodes; batch search; bad input."""
import importlib.util
import os
import subprocess
import sys

import jax
import pytest

from configs import embedded, imagenet512
from scm_jax.cli.plan import GIB, Compiled, Planner, largest_fitting, plan_devices, verdict
from scm_jax.parallel.mesh import mesh_from_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _smoke_scd(dcn=1):
    config = imagenet512.get_config("scd,smoke")
    config.model.depth = 1
    config.mesh.dcn = dcn
    return config


def test_smoke_scd_step_reports_memory_and_flops():
    config = _smoke_scd()
    planner = Planner(config, mesh_from_config(config.mesh))
    assert planner.dp == 8 and planner.teacher  # 8-way FSDP, the teacher's parameters are an input
    c = planner.compile(2)
    assert c.global_batch == 16 and c.flops > 0 and c.temp > 0
    assert 0 < c.alias <= c.argument and c.total > 0  # the donated state is aliased to the new state


@pytest.mark.parametrize("objective, distils", [("cd", True), ("pcm", True), ("pscm", True), ("ect", False),
                                               ("sct", False)])
def test_the_plan_holds_the_teacher_of_every_distilling_objective(objective, distils):
    """The planned step holds what the objective's spec says: a teacher input for CD and PCM / phased sCM too."""
    config = embedded.get_config(f"{objective},smoke")
    assert bool(Planner(config, mesh_from_config(config.mesh)).teacher) == distils


@pytest.fixture
def no_cache_writes():
    """Compile-only executables cannot be read back from the tests' persistent cache (scm-plan turns it off): write
    none. The cache is on for the whole session once used, so entries written before this fixture existed only
    give a warning on reading, and XLA compiles again."""
    before = jax.config.jax_persistent_cache_min_compile_time_secs
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 1e9)
    yield
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before)


@pytest.mark.filterwarnings("ignore:Error reading persistent compilation cache entry")
def test_gpu_compile_without_a_gpu_holds_the_cpu_compiles_state(no_cache_writes):
    """XLA:GPU compiles for two A100 nodes described offline (the gpu-plan extra), one process per node as
    mesh.dcn; the sharded state (arguments, outputs, aliases) is byte for byte the fake-CPU compile's on the same
    mesh; the temporaries are XLA:GPU's own."""
    devices = plan_devices("a100_sxm_80:1x2x4", num_slices=1)
    assert [d.process_index for d in devices] == [0] * 4 + [1] * 4 and devices[0].platform == "gpu"
    config = _smoke_scd(dcn=2)
    gpu = Planner(config, mesh_from_config(config.mesh, devices))
    assert dict(gpu.mesh.shape) == {"dcn": 2, "data": 1, "fsdp": 4, "tensor": 1}
    assert {d.process_index for d in gpu.mesh.devices[1].flat} == {1}  # a node per dcn index
    g, c = gpu.compile(2), Planner(config, mesh_from_config(config.mesh)).compile(2)
    assert (g.argument, g.output, g.alias) == (c.argument, c.output, c.alias)
    assert g.temp > 0 and g.flops is None  # deviceless XLA:GPU has no cost analysis


def test_shipped_gpu_targets_describe_their_gpus():
    assert plan_devices("h100_sxm:1x1x8", num_slices=1)[0].device_kind == "NVIDIA H100 80GB HBM3"
    assert plan_devices("a100_sxm_80:1x1x2", num_slices=1)[0].device_kind == "NVIDIA A100-SXM4-80GB"


@pytest.mark.parametrize("topology, message", [
    ("a100_sxm_80:1x8", "partitions x hosts x GPUs per host"),
    ("missing.txtpb:1x1x8", "no GPU target description at missing.txtpb"),
])
def test_bad_gpu_topology_is_one_clear_error(topology, message):
    with pytest.raises(ValueError, match=message):
        plan_devices(topology, num_slices=1)


def test_gpu_nodes_are_hosts_not_slices():
    with pytest.raises(ValueError, match="GPU nodes are the hosts of --topology"):
        plan_devices("a100_sxm_80:1x1x8", num_slices=2)


def _fake(memory):
    calls = []

    def compile_at(b):
        calls.append(b)
        return Compiled(b, 8 * b, int(memory(b)), 0, 0, 0, 1.0, 0.0)
    return compile_at, calls


def test_largest_fitting_extrapolates_and_checks():
    compile_at, calls = _fake(lambda b: (10 + 3 * b) * GIB)
    best, runs = largest_fitting(compile_at, 80 * GIB, 4, 8)
    assert best == 23 and calls == [4, 8, 23]  # the line through 8 and 23 points back at 23: done
    assert verdict(best, runs, 80).endswith(": 23 (batch 24 and above were not compiled)")


def test_largest_fitting_steps_down_when_the_line_is_optimistic():
    memory = lambda b: 10 + 3 * b + 0.2 * max(0, b - 8) ** 2  # noqa: E731
    compile_at, calls = _fake(lambda b: memory(b) * GIB)
    best, runs = largest_fitting(compile_at, 80 * GIB, 4, 8)
    assert memory(best) <= 80 < memory(best + 1) and calls[:3] == [4, 8, 23] and len(calls) == 5
    assert verdict(best, runs, 80).endswith(f"(batch 23 does not fit; {best + 1}-22 were not compiled)")


def test_largest_fitting_climbs_when_the_line_is_pessimistic():
    memory = lambda b: 2 + b ** 0.8  # noqa: E731  sublinear, as ImageNet-64 on XLA:GPU
    compile_at, calls = _fake(lambda b: memory(b) * GIB)
    best, runs = largest_fitting(compile_at, 50 * GIB, 4, 8, tries=6)
    assert memory(best) <= 50 < memory(best + 1) and len(calls) <= 8
    assert verdict(best, runs, 50).startswith(f"largest per-device batch within 50 GiB: {best} (")


def test_largest_fitting_says_when_the_next_batch_was_compiled():
    compile_at, calls = _fake(lambda b: (10 + 3 * b + (20 if b > 20 else 0)) * GIB)  # a jump past 20
    best, runs = largest_fitting(compile_at, 80 * GIB, 4, 8, tries=5)
    assert best == 20 and calls == [4, 8, 23, 18, 20, 22, 21]
    assert verdict(best, runs, 80).endswith("(batch 21 compiled and does not fit)")


def test_largest_fitting_reports_nothing_fits():
    compile_at, _ = _fake(lambda b: (90 + b) * GIB)
    best, runs = largest_fitting(compile_at, 80 * GIB, 1, 2)
    assert best == 0 and "even batch 1 does not" in verdict(best, runs, 80)
    compile_at, _ = _fake(lambda b: (100 + b) * GIB)
    best, runs = largest_fitting(compile_at, 80 * GIB, 16, 24)
    assert best == 0 and "the smallest compiled, 16, does not; try smaller --fit_batches" in verdict(best, runs, 80)


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
