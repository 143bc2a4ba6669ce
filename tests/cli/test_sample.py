"""scm-sample on real (tiny) runs: ADM npz format, determinism (also across device counts), ODE and explicit
times, bad input as one clear error line (exit code 2)."""
import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

from scm_jax.parallel.mesh import make_mesh
from scm_jax.train import runs
from tests.cli import sharded_sampling
from tests.cli.helpers import assert_one_line_error


def sample(*args, devices: int = 8):
    env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
    out = subprocess.run([sys.executable, "-m", "scm_jax.cli.sample", *args], capture_output=True, text=True,
                         env=env)
    return out.returncode, out.stderr


def test_two_step_npz_is_adm_format_and_deterministic_on_any_device_count(runs_dir, tmp_path):
    """Same seed, same file, on one device as on eight (the noise is drawn inside the sharded jit)."""
    for name, devices in (("a", 8), ("c", 1)):
        rc, err = sample(f"--workdir={runs_dir / 'sct'}", "--num=20", "--batch=8", f"--out={tmp_path / name}.npz",
                         devices=devices)
        assert rc == 0, err
    a, c = (np.load(tmp_path / f"{name}.npz") for name in "ac")
    assert a["arr_0"].shape == (20, 32, 32, 1) and a["arr_0"].dtype == np.uint8
    np.testing.assert_array_equal(a["arr_1"], np.arange(20) % 10)
    np.testing.assert_array_equal(a["arr_0"], c["arr_0"])
    assert (tmp_path / "a.png").exists() and "img/s" in err


def test_teacher_ode_and_explicit_times_from_a_step_folder(runs_dir, tmp_path):
    rc, err = sample(f"--checkpoint={runs_dir / 'teacher' / 'checkpoints' / '6'}",  # --ode_steps alone: Heun
                     "--ode_steps=4", "--num=8", "--batch=8", f"--out={tmp_path / 'ode.npz'}")
    assert rc == 0 and "heun_nfe7 NFE 7" in err, err
    rc, err = sample(f"--workdir={runs_dir / 'sct'}", "--times=1.5,1.0,0.5", "--num=8", "--batch=8",
                     f"--out={tmp_path / 't.npz'}")
    assert rc == 0 and "3step NFE 3" in err, err


@pytest.mark.parametrize("args, message", [
    (["--times=1.0,1.2"], "strictly decreasing"),
    (["--weights=ema_9"], "choose one of"),
    (["--class_label=12"], "10 classes"),
    (["--batch=12"], "multiple of the 8 devices"),
    (["--solver=heun"], "this sct run is a consistency model; sample it with steps=1|2 or times"),
    (["--ode_steps=4"], "this sct run is a consistency model; sample it with steps=1|2 or times"),
    (["--cfg_scale=2"], "this sct run has no guidance"),
    (["--num=0"], "--num=0"),
    (["--latents"], "--latents: this run samples pixels, not latents"),
])
def test_bad_input_is_one_clear_error(runs_dir, args, message):
    assert_one_line_error(*sample(f"--workdir={runs_dir / 'sct'}", "--num=8", *args), message)


def test_checkpoint_of_another_architecture(runs_dir, tmp_path):
    """config.json asking for a wider network than the checkpoint holds (a copied or edited workdir)."""
    shutil.copytree(runs_dir / "sct", tmp_path / "run")
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    config["model"]["channels"] *= 2  # the embedded config's U-Net
    (tmp_path / "run" / "config.json").write_text(json.dumps(config))
    assert_one_line_error(*sample(f"--workdir={tmp_path / 'run'}", "--num=8", "--batch=8"),
                          "is for another architecture/config; restore it with its own config")


def test_missing_workdir_is_one_clear_error(tmp_path):
    assert_one_line_error(*sample(f"--workdir={tmp_path / 'missing'}"), "is not a scm-train workdir")


def test_workdir_without_checkpoint(runs_dir, tmp_path):
    shutil.copy(runs_dir / "sct" / runs.CONFIG_FILE, tmp_path)
    with pytest.raises(FileNotFoundError, match="no checkpoint in .*; train the run first"):
        runs.load_weights(str(tmp_path), "params", make_mesh(-1, 1, 1))


@pytest.mark.slow  # ~40 s on a busy 2-core machine: two jax processes
def test_two_processes_sample_their_slices_and_both_get_the_samples_of_one(tmp_path):
    """Each of 2 processes x 4 devices computes half of every batch; the gathered samples equal one process's."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.cli.sharded_sampling", str(i), "2", str(port),
                               str(tmp_path / "s")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for i in range(2)]
    try:
        outputs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    images, labels, local_rows = sharded_sampling.samples(make_mesh(-1, 1, 1))  # 1 process x 8 devices
    assert local_rows == sharded_sampling.BATCH
    for i, (p, out) in enumerate(zip(procs, outputs)):
        assert p.returncode == 0 and f"LOCAL_ROWS {sharded_sampling.BATCH // 2}" in out, out[-3000:]
        got = np.load(tmp_path / f"s_{i}.npz")
        np.testing.assert_array_equal(got["images"], images)
        np.testing.assert_array_equal(got["labels"], labels)
