"""Real training runs of every objective on the embedded data (tiny DiT, a few steps, 8 fake devices), and what a
user watches: the start-up report, throughput / MFU, the profiler trace and the persistent compilation cache."""
import glob
import json
import logging
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from tests.fakes import smoke
from scm_jax.train import loop, progress, runs
from scm_jax.train.loop import train_and_evaluate


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("teacher"))
    train_and_evaluate(smoke("diffusion", **{"train.steps": 40, "train.log_every": 10, "sample.every_steps": 40}),
                       workdir)
    return workdir


def test_diffusion_run_writes_checkpoint_config_samples_and_loss_falls(teacher):
    assert os.path.exists(os.path.join(teacher, runs.CONFIG_FILE))
    assert os.listdir(os.path.join(teacher, "samples")) == ["heun_nfe35_0000040.png"]
    assert 40 in runs.checkpointer(runs.read_config(teacher), teacher).all_steps()
    losses = scalars(teacher, "loss")
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("objective", ["sct", "scd"])
def test_consistency_objectives_train(objective, teacher, tmp_path):
    config = smoke(objective, **{"scm.teacher_workdir": teacher})
    state = train_and_evaluate(config, str(tmp_path))
    assert int(state["step"]) == config.train.steps
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"]))
    assert sorted(os.listdir(tmp_path / "samples")) == ["1step_0000006.png", "2step_0000006.png"]


def test_resume_equals_uninterrupted_run(tmp_path):
    straight = train_and_evaluate(smoke("sct", **{"train.steps": 6}), str(tmp_path / "a"))
    train_and_evaluate(smoke("sct", **{"train.steps": 3}), str(tmp_path / "b"))
    resumed = train_and_evaluate(smoke("sct", **{"train.steps": 6}), str(tmp_path / "b"))
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.fixture(scope="module")
def watched_run(tmp_path_factory):
    """A smoke run profiling steps 2-3, in microbatches of 1 per device (2 accumulation steps), with a made-up peak
    for the CPU so that MFU is computed and a stand-in evaluation every 3 steps; (workdir, log)."""
    workdir = str(tmp_path_factory.mktemp("watched"))
    handler, absl_log = _Lines(), logging.getLogger("absl")
    absl_log.addHandler(handler)
    level = absl_log.level
    absl_log.setLevel(logging.INFO)  # setLevel, not the attribute: it clears the logger's isEnabledFor cache
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(progress, "PEAK_BF16_TFLOPS", (("cpu", 1.0),))
        patch.setattr(loop, "make_sample_eval", lambda *args: lambda params: {"eval/fd": 1.5})
        train_and_evaluate(smoke("diffusion", **{"profile.start_step": 1, "profile.num_steps": 2,
                                                 "train.microbatch": 1, "eval.every_steps": 3}), workdir)
    absl_log.removeHandler(handler)
    absl_log.setLevel(level)
    return workdir, "\n".join(handler.lines)


def test_startup_report_reaches_log_and_metrics(watched_run):
    workdir, log = watched_run
    report = records(workdir, "startup")[0]
    assert report["platform"] == "cpu" and report["devices"] == 8 and report["processes"] == 1
    assert [report[k] for k in ("global_batch", "per_device_batch", "microbatch", "accum_steps")] == [16, 2, 1, 2]
    assert report["mesh"] == "dcn=1 data=8 fsdp=1 tensor=1" and report["parameters"] > 0
    assert report["xla_flops_per_step_per_device"] > 0 and report["peak_flops_per_device"] == 1e12
    assert "start-up report:" in log and "xla_flops_per_step_per_device" in log
    assert "batch: global batch 16 = 8 devices x microbatch 1 x 2 accumulation steps" in log


def test_throughput_and_mfu_are_logged_without_the_first_step(watched_run):
    workdir, log = watched_run
    rows = records(workdir, "loss")
    assert "step_time_s" not in rows[0] or rows[0]["step"] > 1  # the compiling step is never timed
    assert all(r["img_per_s"] > 0 and 0 < r["mfu"] for r in rows)
    assert "mfu=" in log and "img_per_s=" in log


def test_periodic_evaluation_reaches_the_console(watched_run):
    workdir, log = watched_run
    assert "eval at step 3  eval/fd=1.5" in log and "eval at step 6  eval/fd=1.5" in log
    assert [r["step"] for r in records(workdir, "eval/fd")] == [3, 6]


def test_profiler_writes_a_trace_for_tensorboard(watched_run):
    workdir, _ = watched_run
    assert glob.glob(os.path.join(workdir, "profile", "plugins", "profile", "*", "*.xplane.pb"))


def test_cpu_reports_no_mfu():
    assert progress.mfu(1e9, 1.0, "cpu") is None


def test_second_start_loads_the_step_from_the_compilation_cache(tmp_path):
    """Two processes (JAX fixes its cache directory once per process): the second compiles nothing it can load."""
    cache = tmp_path / "cache"
    command = [sys.executable, "-m", "scm_jax.cli.train", "--config=configs/embedded.py:diffusion,smoke",
               "--config.train.steps=2", "--config.sample.every_steps=0", f"--config.train.compile_cache_dir={cache}"]
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    for run in ("a", "b"):
        result = subprocess.run(command + [f"--workdir={tmp_path / run}"], env=env, cwd=root, capture_output=True,
                                text=True)
        assert result.returncode == 0, result.stderr[-3000:]
    assert records(str(tmp_path / "a"), "startup")[0]["compile_cache_hits"] == 0
    assert records(str(tmp_path / "b"), "startup")[0]["compile_cache_hits"] >= 1
    assert os.listdir(cache)


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def records(workdir: str, key: str) -> list[dict]:
    """The metrics.jsonl lines holding `key`: "startup" (the start-up report), a metric name."""
    with open(os.path.join(workdir, "metrics.jsonl")) as fh:
        return [r.get(key) if key == "startup" else r for r in map(json.loads, fh) if key in r]


def scalars(workdir: str, tag: str) -> list[float]:
    return [r[tag] for r in records(workdir, tag)]
