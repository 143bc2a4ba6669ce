"""scm-plan: compile a run's full train step ahead of time for a mesh that is not here; print memory and FLOPs.

    scm-plan --config=configs/imagenet512.py:scd --devices=8 --hbm_gib=80                 # 8 fake CPU devices (XLA:CPU)
    scm-plan --config=configs/imagenet512.py:scd --devices=64 --config.mesh.dcn=8 --hbm_gib=80   # 8 nodes
    scm-plan --config=configs/imagenet512.py:scd --topology=v5p:2x2x2 --hbm_gib=95         # 8 TPU v5p chips
    scm-plan --config=configs/imagenet512.py:scd --topology=a100_sxm_80:1x1x8 --hbm_gib=72.9  # 8 A100s, XLA:GPU

What is compiled: `scm_jax.train.step.make_train_step` exactly as `scm-train` jits it (student forward and backward,
the sCM JVP tangent pass, the teacher with classifier-free guidance, optimizer, EMAs, the non-finite skip),
lowered from `jax.ShapeDtypeStruct`s that carry the run's shardings, so nothing is allocated. A distilling
objective's teacher (its spec, objectives.registry: sCD, CD, PCM / phased sCM with pcm.distill) is a network of
the student's size whose parameters are an input of the step (sharded like the student's).

Where it compiles:
  --devices=N     N fake CPU devices. XLA reads the count once, when its CPU backend starts, so the binary
                  re-executes itself with XLA_FLAGS=--xla_force_host_platform_device_count=N JAX_PLATFORMS=cpu.
  --topology=T    real TPU chips described offline by libtpu (`jax.experimental.topologies.get_topology_desc`),
                  e.g. v5p:2x2x2 (8 chips, 4 per host) with --num_slices=S for multi-slice (mesh.dcn=S). Needs
                  `pip install 'libtpu==0.0.42.*'` (the version jax 0.10.2 pins); it runs on a CPU-only host.
                  Without libtpu jax answers "JAX TPU support not installed; cannot generate TPU topology".
                  libtpu locks /tmp/libtpu_lockfile: set ALLOW_MULTIPLE_LIBTPU_LOAD=1 to run plans side by side.
  --topology=G:PxHxD  GPUs compiled by XLA:GPU without a GPU (deviceless AOT): G is a target description shipped in
                  scm_jax/assets/gpu (a100_sxm_80, h100_sxm) or the path of a GpuTargetConfigProto .txtpb; P x H x D
                  is partitions x hosts x GPUs per host, e.g. 1x1x8 (one node) or 1x8x8 (8 nodes, mesh.dcn=8).
                  Needs the CUDA PJRT plugin: `pip install -e '.[gpu-plan]'`; no CUDA libraries or driver (with
                  the plugin, other jax programs on a GPU-less host warn "Unable to load CUDA": JAX_PLATFORMS=cpu).

Printed for each compile: per-device memory = arguments + outputs - aliases (the donated state) + temporaries,
from `compiled.memory_analysis()`, and FLOPs per step per device from `compiled.cost_analysis()` (a deviceless
XLA:GPU compile has none: "-"; the program is the one whose FLOPs the CPU and TPU compiles report). With
--hbm_gib, the largest per-device batch that fits: compiles at the two --fit_batches give a line, a compile where
it reaches the limit checks it, and the line through the two compiles nearest the limit is refitted (up to three
checks: memory is close to affine in the batch, below XLA's own rematerialization limit).
"Per-device batch" is global batch / data-parallel size (dcn * data * fsdp): images per device and step without
tensor parallelism. With --config.train.grad_accum_steps=k the step scans k microbatches of batch/k per device,
so memory follows the microbatch (plan a microbatch m with --batch_per_device=m*k).

Caveats: a CPU compile's memory is an upper bound for GPUs (XLA:CPU fuses, lays out and schedules buffers
differently and keeps rematerialised activations live); a --topology compile is XLA:TPU's or XLA:GPU's own
figure. XLA's cost analysis counts a loop body once, so the blockwise attention (a lax.scan over key blocks) is
undercounted.
"""
import dataclasses
import json
import math
import os
import pathlib
import re
import sys
import time
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
from absl import app, flags
from jax.experimental import topologies
from jax.sharding import NamedSharding
from ml_collections import ConfigDict, config_flags

from scm_jax.cli.common import run_app
from scm_jax.models.registry import model_apply
from scm_jax.objectives import registry
from scm_jax.parallel import sharding
from scm_jax.parallel.batch import batch_devices
from scm_jax.parallel.mesh import mesh_from_config
from scm_jax.train.optim import make_optimizer
from scm_jax.train.state import make_setup, model_specs
from scm_jax.train.step import make_train_step

_CONFIG = config_flags.DEFINE_config_file(
    "config", None, "Config: a shipped name[:arg] (embedded:sct) or a file path[:arg].", lock_config=True)
_DEVICES = flags.DEFINE_integer("devices", 8, "Number of fake CPU devices to compile for (unless --topology).")
_TOPOLOGY = flags.DEFINE_string("topology", None, "TPU or GPU topology to compile for: v5p:2x2x2 (needs libtpu) or "
                                 "a100_sxm_80:1x1x8 (needs the CUDA plugin, extra gpu-plan).")
_NUM_SLICES = flags.DEFINE_integer("num_slices", 1, "Slices of --topology (set --config.mesh.dcn to the same).")
_BATCH = flags.DEFINE_integer("batch_per_device", None, "Per-device batch to compile; default: "
                              "config.train.batch_size / data-parallel size. Skipped when --hbm_gib is given.")
_HBM = flags.DEFINE_float("hbm_gib", None, "Device memory in GiB: find the largest per-device batch that fits.")
_FIT = flags.DEFINE_list("fit_batches", ["4", "8"], "Two per-device batches whose memory gives the line.")
_JSON = flags.DEFINE_string("json", None, "Also write the compiles as JSON to this file.")
flags.mark_flags_as_required(["config"])

GIB = 2**30
GPU_TARGETS = pathlib.Path(__file__).parents[1] / "assets" / "gpu"
_DEVICE_FLAG = "--xla_force_host_platform_device_count"


@dataclasses.dataclass(frozen=True)
class Compiled:
    """Per-device memory (bytes) and FLOPs of one compile of the train step."""
    batch_per_device: int
    global_batch: int
    argument: int
    output: int
    alias: int
    temp: int
    flops: Optional[float]
    compile_s: float

    @property
    def total(self) -> int:
        return self.argument + self.output - self.alias + self.temp


def ensure_cpu_devices(n: Optional[int]) -> None:
    """Re-execute this binary with `n` fake CPU devices (or the CPU platform only, for n=None) unless set."""
    xla_flags = os.environ.get("XLA_FLAGS", "")
    counts = re.findall(rf"{_DEVICE_FLAG}=(\d+)", xla_flags)
    if os.environ.get("JAX_PLATFORMS") == "cpu" and (n is None or counts[-1:] == [str(n)]):
        return
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    if n is not None:
        others = re.sub(rf"{_DEVICE_FLAG}=\d+", "", xla_flags)
        env["XLA_FLAGS"] = f"{others} {_DEVICE_FLAG}={n}".strip()
    os.execve(sys.executable, [sys.executable, "-m", "scm_jax.cli.plan", *sys.argv[1:]], env)


def gpu_target(name: str) -> Optional[str]:
    """The GpuTargetConfigProto text of a shipped GPU name or a .txtpb path; None where `name` is not a GPU."""
    if name.endswith(".txtpb"):
        if not os.path.isfile(name):
            raise ValueError(f"--topology={name}:...: no GPU target description at {name}.")
        return pathlib.Path(name).read_text()
    shipped = GPU_TARGETS / f"{name}.txtpb"
    return shipped.read_text() if shipped.is_file() else None


def gpu_devices(target: str, topology: str) -> list:
    """Compile-only GPUs of `target` arranged as `topology` (partitions x hosts x GPUs per host)."""
    name, _, shape = topology.rpartition(":")
    try:
        return topologies.get_topology_desc(name, "cuda", target_config=target, topology=shape).devices
    except NotImplementedError as e:
        raise ValueError(f"--topology={topology}: {e}: install the CUDA PJRT plugin (pip install -e '.[gpu-plan]'; "
                         "no GPU or CUDA libraries needed) or plan with --devices=N fake CPU devices.") from e
    except RuntimeError as e:
        raise ValueError(f"--topology={topology}: {e}; give the shape as partitions x hosts x GPUs per host, "
                         "e.g. a100_sxm_80:1x1x8.") from e


def plan_devices(topology: Optional[str], num_slices: int) -> list:
    """The devices to compile for: GPUs or TPU chips of `topology` described offline, else this process's devices."""
    if topology is None:
        return jax.devices()
    target = gpu_target(topology.rpartition(":")[0])
    if target is not None:
        if num_slices != 1:
            raise ValueError(f"--num_slices={num_slices} is for TPU slices; GPU nodes are the hosts of --topology "
                             "(1xHxD) with mesh.dcn=H.")
        return gpu_devices(target, topology)
    try:
        desc = topologies.get_topology_desc(platform="tpu", topology_name=topology, chip_config_name="default",
                                            chips_per_host_bounds=(2, 2, 1), num_slices=num_slices)
    except RuntimeError as e:
        fix = ("install libtpu (pip install 'libtpu==0.0.42.*') or plan with --devices=N fake CPU devices"
               if "not installed" in str(e) else
               "libtpu serves one process at a time: set ALLOW_MULTIPLE_LIBTPU_LOAD=1 to run plans side by side")
        raise ValueError(f"--topology={topology}: {e}; {fix}.") from e
    return desc.devices


class Planner:
    """The run's sharded train step, lowered and compiled for any per-device batch."""

    def __init__(self, config: ConfigDict, mesh: jax.sharding.Mesh):
        self.config, self.mesh = config, mesh
        self.setup = make_setup(config, mesh, make_optimizer(config))
        self.dp = batch_devices(mesh)
        distills = registry.spec(config).distills(config)
        self.teacher_graphdef, self.teacher = self._abstract_teacher() if distills else (None, {})
        self.step = jax.jit(self._step, donate_argnums=(0,))

    def _abstract_teacher(self) -> tuple[Any, dict]:
        """The distilled teacher: a diffusion network of the student's size (no guidance input), sharded like it."""
        rules = sharding.RULES[self.config.mesh.rules]
        cfg = dataclasses.replace(self.setup.model_cfg, guidance_embed=False)
        graphdef, shapes, specs = model_specs(cfg, rules, self.mesh)
        named = sharding.named(self.mesh, specs)
        return graphdef, jax.tree.map(lambda s, n: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=n), shapes, named)

    def _step(self, state: dict, batch: dict, teacher_params: dict):
        teacher_fn = None
        if self.teacher_graphdef is not None:  # as scm_jax.train.loop.load_teacher builds it
            apply = model_apply(self.teacher_graphdef, teacher_params)
            teacher_fn = lambda x, t, labels=None: apply(x, t, labels)[0]  # noqa: E731
        return make_train_step(self.setup, self.config, teacher_fn)(state, batch)

    def batch(self, global_batch: int) -> dict:
        d = self.config.data
        image = (global_batch, d.image_size, d.image_size, d.channels)
        return {"image": jax.ShapeDtypeStruct(image, jnp.float32,
                                              sharding=NamedSharding(self.mesh, sharding.batch_spec(4))),
                "label": jax.ShapeDtypeStruct((global_batch,), jnp.int32,
                                              sharding=NamedSharding(self.mesh, sharding.batch_spec(1)))}

    def compile(self, batch_per_device: int) -> Compiled:
        accum = self.config.train.grad_accum_steps  # the step scans microbatches of batch_per_device / accum
        if batch_per_device < 1 or batch_per_device % accum:
            raise ValueError(f"per-device batch {batch_per_device} must be a positive multiple of "
                             f"train.grad_accum_steps={accum}.")
        start = time.time()
        global_batch = batch_per_device * self.dp
        compiled = self.step.lower(self.setup.abstract, self.batch(global_batch), self.teacher).compile()
        m, cost = compiled.memory_analysis(), compiled.cost_analysis()
        return Compiled(batch_per_device, global_batch, m.argument_size_in_bytes, m.output_size_in_bytes,
                        m.alias_size_in_bytes, m.temp_size_in_bytes, cost and float(cost["flops"]),
                        time.time() - start)


def largest_fitting(compile_at: Callable[[int], Compiled], hbm_bytes: float, b1: int, b2: int,
                    tries: int = 3) -> tuple[int, list[Compiled]]:
    """Largest per-device batch whose compile fits `hbm_bytes` (0: none). Secant search: the line through the two
    compiles nearest the limit predicts the batch that reaches it, a compile there checks it, up to `tries` times;
    it stops early once the line points at a batch already compiled."""
    if not 0 < b1 < b2:
        raise ValueError(f"--fit_batches={b1},{b2}: give two increasing per-device batches >= 1.")
    runs = {b: compile_at(b) for b in (b1, b2)}
    for _ in range(tries):
        miss = min((b for b, r in runs.items() if r.total > hbm_bytes), default=math.inf)
        nearest = sorted(runs.values(), key=lambda r: abs(r.total - hbm_bytes))[:2]
        line = _predict(*sorted(nearest, key=lambda r: r.batch_per_device), hbm_bytes)
        predicted = min(max(line, _fitting(runs, hbm_bytes)), miss - 1)
        if predicted < 1 or predicted in runs:
            break
        runs[predicted] = compile_at(predicted)
    return _fitting(runs, hbm_bytes), sorted(runs.values(), key=lambda r: r.batch_per_device)


def _fitting(runs: dict[int, Compiled], hbm_bytes: float) -> int:
    """The largest compiled batch within `hbm_bytes` (0: none)."""
    return max((b for b, r in runs.items() if r.total <= hbm_bytes), default=0)


def verdict(best: int, runs: list[Compiled], hbm_gib: float) -> str:
    """The search's answer, saying how far the compiles prove it."""
    tried = {r.batch_per_device for r in runs}
    if not best:
        return (f"no per-device batch fits {hbm_gib:g} GiB: " + (
            "even batch 1 does not (more FSDP devices, remat='full', or bf16 parameters)." if 1 in tried else
            f"the smallest compiled, {min(tried)}, does not; try smaller --fit_batches."))
    miss = min((b for b in tried if b > best), default=None)
    return f"largest per-device batch within {hbm_gib:g} GiB: {best}" + (
        f" (batch {best + 1} compiled and does not fit)" if miss == best + 1 else
        f" (batch {miss} does not fit; {best + 1}-{miss - 1} were not compiled)" if miss else
        f" (batch {best + 1} and above were not compiled)")


def _predict(p: Compiled, q: Compiled, hbm_bytes: float) -> int:
    """The batch where the line through compiles p and q reaches `hbm_bytes`."""
    slope = (q.total - p.total) / (q.batch_per_device - p.batch_per_device)
    if slope <= 0:
        raise ValueError(f"memory does not grow from batch {p.batch_per_device} to {q.batch_per_device}; pick "
                         "--fit_batches further apart.")
    return p.batch_per_device + math.floor((hbm_bytes - p.total) / slope)


def row(c: Compiled) -> str:
    return (f"| {c.batch_per_device} | {c.global_batch} | {c.argument / GIB:.2f} | {c.output / GIB:.2f} | "
            f"{c.alias / GIB:.2f} | {c.temp / GIB:.2f} | **{c.total / GIB:.2f}** | "
            f"{'-' if c.flops is None else f'{c.flops / 1e12:.1f}'} | "
            f"{c.compile_s:.0f} |")


def describe(planner: Planner, devices: list) -> str:
    mesh, cfg = planner.mesh, planner.config
    n_params = sum(math.prod(p.shape) for p in jax.tree.leaves(planner.setup.abstract["params"]))
    kind = devices[0].device_kind
    return (f"{len(devices)} x {kind}  mesh {dict(mesh.shape)}  rules={cfg.mesh.rules}  objective={cfg.objective}  "
            f"student {n_params / 1e9:.3f} B params  dtype={cfg.model.dtype}  remat={cfg.model.remat}")


HEADER = ("| batch/device | global batch | arguments GiB | outputs GiB | aliases GiB | temp GiB | "
          "per-device GiB | TFLOP/step/device | compile s |\n|---|---|---|---|---|---|---|---|---|")


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; options are --flag=value.")
    ensure_cpu_devices(None if _TOPOLOGY.value else _DEVICES.value)
    config = _CONFIG.value
    if _TOPOLOGY.value:  # compile-only executables cannot be loaded back from a persistent compilation cache
        jax.config.update("jax_enable_compilation_cache", False)
    devices = plan_devices(_TOPOLOGY.value, _NUM_SLICES.value)
    planner = Planner(config, mesh_from_config(config.mesh, devices))
    print(describe(planner, devices), HEADER, sep="\n", flush=True)
    compile_at = lambda b: _printed(planner.compile(b))  # noqa: E731
    if _HBM.value is None:
        runs = [compile_at(_BATCH.value or max(1, config.train.batch_size // planner.dp))]
    else:
        if len(_FIT.value) != 2:
            raise ValueError(f"--fit_batches={','.join(_FIT.value)}: give exactly two per-device batches.")
        best, runs = largest_fitting(compile_at, _HBM.value * GIB, *map(int, _FIT.value))
        print(verdict(best, runs, _HBM.value))
    if _JSON.value:
        with open(_JSON.value, "w") as fh:
            json.dump([dataclasses.asdict(r) | {"total": r.total} for r in runs], fh, indent=1)


def _printed(c: Compiled) -> Compiled:
    print(row(c), flush=True)
    return c


def run() -> None:
    run_app(main)


if __name__ == "__main__":
    run()
