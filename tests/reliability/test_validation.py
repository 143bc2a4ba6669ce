"""Bad config, data, checkpoint or workdir: one clear error naming the problem, before any compute."""
import errno
import os
import re
import shutil
from collections import namedtuple

import numpy as np
import pytest

from scm_jax.data.build import build
from scm_jax.train import runs
from scm_jax.train.loop import train_and_evaluate
from scm_jax.train.validate import removed_on_failed_start, validate_data
from tests.cli.helpers import assert_one_line_error
from tests.reliability.harness import run_cli, smoke


@pytest.mark.parametrize("change, error, match", [
    (lambda c: setattr(c.train, "batchsize", 8), AttributeError, 'Did you mean "batch_size"'),
    (lambda c: setattr(c.optim, "lr", "fast"), TypeError, "lr"),
])
def test_unknown_key_and_wrong_type_are_refused(change, error, match):
    with pytest.raises(error, match=match):
        change(smoke())


@pytest.mark.parametrize("overrides, match", [
    ({"train.batch_size": 12}, "train.batch_size=12 is not divisible by the data-parallel size dcn\\*data\\*fsdp=8"),
    ({"objective": "scd"}, "objective='scd' needs scm.teacher_workdir"),
    ({"optim.lr": -1e-3}, "optim.lr=-0.001; it must be > 0"),
    ({"train.max_bad_steps": 0}, "train.max_bad_steps=0; it must be > 0"),
    ({"model.name": "dit", "model.patch_size": 5}, "data.image_size=32 is not divisible by model.patch_size=5"),
    ({"model.name": "dit", "model.hidden_size": 32, "model.num_heads": 3},
     "model.hidden_size=32 is not divisible by model.num_heads=3"),
    ({"scm.guidance_lo": 3.0, "scm.guidance_hi": 1.0}, "scm.guidance_lo=3.0 > scm.guidance_hi=1.0"),
    ({"train.ema_half_lives_mimg": (0.0,)}, "train.ema_half_lives_mimg"),
])
def test_inconsistent_config_fails_before_any_compute(tmp_path, overrides, match):
    with pytest.raises(ValueError, match=f"config: {match}"):
        train_and_evaluate(smoke(**overrides), str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_cli_error_is_one_line_naming_the_fix(tmp_path):
    out = run_cli(tmp_path / "run", "--config.train.batch_size=12")
    assert out.returncode == 2, out.stderr[-3000:]
    assert out.stderr.strip().splitlines()[-1] == (
        "error: ValueError: config: train.batch_size=12 is not divisible by the data-parallel size dcn*data*fsdp=8; "
        "use a multiple of it.")
    assert not (tmp_path / "run").exists()


def _data_set(tmp_path, images: np.ndarray, labels: np.ndarray | None, **build_options) -> dict:
    np.savez(tmp_path / "set.npz", images=images, **({} if labels is None else {"labels": labels}))
    build(str(tmp_path / "set.npz"), "bad_set", str(tmp_path / "data"), **build_options)
    return {"data.name": "bad_set", "data.data_dir": str(tmp_path / "data")}


_RNG = np.random.default_rng(0)
_PIXELS = _RNG.integers(0, 256, (32, 32, 32, 1), dtype=np.uint8)
_LABELS = np.arange(32) % 10


@pytest.mark.parametrize("images, labels, build_options, overrides, match", [
    (_PIXELS, _LABELS + 5, {"num_classes": 15}, {}, "data: 'bad_set' has 15 classes (recorded when it was built), "
     "the config data.num_classes=10; set --config.data.num_classes=15."),
    (_PIXELS, None, {}, {}, "data: 'bad_set' has no labels (recorded when it was built), the config "
     "data.num_classes=10; set --config.data.num_classes=0."),
    (_PIXELS / 255.0, _LABELS, {"kind": "latents"}, {}, "data: 'bad_set' holds latents, the config "
     "data.kind='pixels'; set --config.data.kind=latents."),
    (_PIXELS[:, :28, :28], _LABELS, {}, {}, "data: 'bad_set' holds 28x28x1 images, the config 32x32x1 "
     "(data.image_size, data.channels); set --config.data.image_size=28 --config.data.channels=1"),
], ids=["class count", "no labels", "kind", "shape"])
def test_data_unlike_the_config_fails_before_any_compute(tmp_path, images, labels, build_options, overrides,
                                                         match):
    config = smoke(**_data_set(tmp_path, images, labels, **build_options), **overrides)
    with pytest.raises(ValueError, match=re.escape(match)):
        train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_data_error_through_the_binary_is_one_line(tmp_path):
    flags = [f"--config.{k}={v}" for k, v in _data_set(tmp_path, _PIXELS, _LABELS + 5, num_classes=15).items()]
    out = run_cli(tmp_path / "run", *flags)
    assert_one_line_error(out.returncode, out.stderr, "set --config.data.num_classes=15.")
    assert not (tmp_path / "run").exists()


def test_records_are_spot_checked_for_finite_values_and_label_range():
    """Sets that record nothing (not built by scm_jax.data.build) are spot-checked record by record."""
    images = np.zeros((32, 32, 32, 1), np.float32)
    source = [{"image": images[i] if i != 31 else images[i] * np.nan, "label": i % 10} for i in range(32)]
    with pytest.raises(ValueError, match="record 31 of 'embedded' holds non-finite values"):
        validate_data(source, smoke())
    source = [{"image": images[i], "label": i % 10 + 5} for i in range(32)]
    with pytest.raises(ValueError, match=r"record \d+ of 'embedded' has label 1[0-4], outside \[0, data.num_classes"):
        validate_data(source, smoke())


def test_scd_on_data_unlike_the_teachers_names_the_teachers_config(tmp_path):
    teacher = smoke("diffusion", **{"data.image_size": 16})
    runs.write_config(teacher, str(tmp_path))
    student = smoke("scd", **{"scm.teacher_workdir": str(tmp_path)})
    source = [{"image": np.zeros((32, 32, 1), np.uint8), "label": 0}] * 16
    with pytest.raises(ValueError, match=re.escape(
            f"data: the teacher in {tmp_path} was trained on 16x16x1 images with 10 classes (the teacher's "
            "config.json), this run's data is 32x32x1 with 10; distil on the teacher's data: "
            "--config.data.image_size=16")):
        validate_data(source, student)


def test_unwritable_workdir(tmp_path):
    (tmp_path / "a_file").write_text("")  # a path under a regular file cannot be created, even as root
    with pytest.raises(PermissionError, match="workdir .*a_file/run' is not writable .*Not a directory"):
        train_and_evaluate(smoke(), str(tmp_path / "a_file" / "run"))


def test_full_workdir(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(2**30, 2**30 - 2**10, 2**10))
    with pytest.raises(OSError, match=r"has 0.0 MiB free but one checkpoint of this run takes [\d.]+ MiB") as e:
        train_and_evaluate(smoke(), str(tmp_path / "run"))
    assert e.value.errno == errno.ENOSPC
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text, match", [("{\"objective\": ", "not valid config JSON"), ("{}", "lacks")])
def test_corrupt_config_json_is_one_clear_error(tmp_path, text, match):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ValueError, match=match):
        runs.read_config(str(tmp_path))


def _fail_after(write):
    def run(workdir):
        os.makedirs(os.path.join(workdir, runs.CHECKPOINT_DIR, "empty"), exist_ok=True)
        write(workdir)
        raise ValueError("failed start")
    return run


@pytest.mark.parametrize("write, kept", [
    (lambda w: runs.write_config(smoke(), w), False),
    (lambda w: open(os.path.join(w, "metrics.jsonl"), "w").close(), True),
])
def test_failed_start_leaves_no_workdir_but_keeps_logs(tmp_path, write, kept):
    """scm-train wraps the run in removed_on_failed_start: a config.json and empty folders are debris."""
    workdir = str(tmp_path / "run")
    with pytest.raises(ValueError, match="failed start"), removed_on_failed_start(workdir):
        _fail_after(write)(workdir)
    assert os.path.exists(workdir) == kept
    os.makedirs(workdir, exist_ok=True)  # a workdir that existed before the run is never removed
    with pytest.raises(ValueError, match="failed start"), removed_on_failed_start(workdir):
        _fail_after(lambda w: runs.write_config(smoke(), w))(workdir)
    assert os.path.exists(os.path.join(workdir, runs.CONFIG_FILE))
