"""scm-sample on real (tiny) runs: ADM npz format, determinism, ODE and explicit times, clear errors."""
import subprocess
import sys

import numpy as np
import pytest

from configs import embedded
from scm_jax.train.loop import train_and_evaluate


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    train_and_evaluate(embedded.get_config("diffusion,smoke"), str(root / "teacher"))
    train_and_evaluate(embedded.get_config("sct,smoke"), str(root / "sct"))
    return root


def sample(*args):
    out = subprocess.run([sys.executable, "-m", "scm_jax.cli.sample", *args], capture_output=True, text=True)
    return out.returncode, out.stderr


def test_two_step_npz_is_adm_format_and_deterministic(runs_dir, tmp_path):
    for name in ("a", "b"):
        rc, err = sample(f"--workdir={runs_dir / 'sct'}", "--num=20", "--batch=8", f"--out={tmp_path / name}.npz")
        assert rc == 0, err
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert a["arr_0"].shape == (20, 32, 32, 1) and a["arr_0"].dtype == np.uint8
    np.testing.assert_array_equal(a["arr_1"], np.arange(20) % 10)
    np.testing.assert_array_equal(a["arr_0"], b["arr_0"])
    assert (tmp_path / "a.png").exists() and "img/s" in err


def test_teacher_ode_and_explicit_times_from_a_step_folder(runs_dir, tmp_path):
    rc, err = sample(f"--checkpoint={runs_dir / 'teacher' / 'checkpoints' / '6'}", "--solver=heun",
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
])
def test_bad_input_is_one_clear_error(runs_dir, args, message):
    rc, err = sample(f"--workdir={runs_dir / 'sct'}", "--num=8", *args)
    assert rc != 0 and message in err, err


def test_not_a_workdir(tmp_path):
    rc, err = sample(f"--workdir={tmp_path}")
    assert rc != 0 and "is not a scm-train workdir" in err
