"""The trainer's periodic evaluation (config.eval) on the shared runs: the metric reaches metrics.jsonl and
TensorBoard, each sampler compiles once for the whole run, bad settings fail before training."""
import glob
import json
import os
import struct

import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from scm_jax.data.build import build
from scm_jax.train.loop import train_and_evaluate
from tests.cli.helpers import smoke


def eval_rows(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as fh:
        return [r for r in map(json.loads, fh) if any(k.startswith("eval/") for k in r)]


def tb_tags(workdir) -> set[str]:
    """Scalar tags in the TensorBoard event files (TFRecord framing: length, crc, event, crc)."""
    tags = set()
    for path in glob.glob(os.path.join(workdir, "tb", "events.*")):
        data, pos = open(path, "rb").read(), 0
        while pos < len(data):
            (length,) = struct.unpack("<Q", data[pos:pos + 8])
            tags.update(v.tag for v in event_pb2.Event.FromString(data[pos + 12:pos + 12 + length]).summary.value)
            pos += 12 + length + 4
    return tags


def test_sct_run_logs_fd_and_accuracy_every_n_steps(runs_dir):
    rows = eval_rows(runs_dir / "sct")
    assert [r["step"] for r in rows] == [3, 6]
    for r in rows:
        assert np.isfinite([r["eval/1step/fd"], r["eval/2step/fd"]]).all()
        assert 0.0 <= r["eval/1step/accuracy"] <= 1.0 and 0.0 <= r["eval/2step/precision"] <= 1.0
    assert {"eval/1step/fd", "eval/2step/accuracy"} <= tb_tags(runs_dir / "sct")


def test_diffusion_run_is_scored_with_heun_at_the_configured_nfe(runs_dir):
    rows = eval_rows(runs_dir / "teacher")
    assert [r["step"] for r in rows] == [6] and np.isfinite(rows[0]["eval/heun_nfe5/fd"])


def test_each_eval_sampler_compiles_once_per_run(sampler_traces):
    eval_traces = sorted(t for t in sampler_traces if t[1] == 8)  # eval batch 8; the grids sample 16
    assert eval_traces == [("1step", 8), ("2step", 8), ("heun_nfe5", 8)]  # sCT evaluated twice, traced once


@pytest.mark.parametrize("overrides, message", [
    ({"metric": "inception"}, "no Inception weights file"),
    ({"metric": "inception", "inception_weights": __file__}, "no reference statistics file"),
    ({"metric": "fid"}, "metric 'fid' is unknown"),
    ({"batch_size": 12}, "multiple of the 8 data-parallel devices"),
    ({"metric": "inception", "num_samples": 8}, "metric='inception' needs eval.num_samples >= 10"),
    ({"num_samples": 1}, "metric='mnist' needs eval.num_samples >= 2"),
])
def test_bad_eval_settings_fail_before_training(tmp_path, overrides, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        train_and_evaluate(smoke("sct", **overrides), str(tmp_path))
    assert not (tmp_path / "checkpoints").exists()


def test_scd_on_data_shaped_unlike_the_teacher_names_the_teachers_config(runs_dir, tmp_path):
    """The shared teacher learnt 32x32x1 digits; a student set of 16x16x1 digits is refused before compiling."""
    np.savez(tmp_path / "small.npz", images=np.zeros((16, 16, 16, 1), np.uint8), labels=np.arange(16) % 10)
    build(str(tmp_path / "small.npz"), "small", str(tmp_path / "data"))
    config = smoke("scd")
    with config.unlocked():
        config.data.update(name="small", data_dir=str(tmp_path / "data"), image_size=16)
        config.scm.teacher_workdir = str(runs_dir / "teacher")
        config.eval.every_steps = 0  # the mnist metric takes 32x32 digits
    with pytest.raises(ValueError, match="the teacher in .* was trained on 32x32x1 images with 10 classes "
                                         r"\(the teacher's config.json\), this run's data is 16x16x1"):
        train_and_evaluate(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()
