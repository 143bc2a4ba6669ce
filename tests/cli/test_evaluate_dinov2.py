"""scm-evaluate --metric=dinov2: FD_DINOv2 through the binary with tiny random DINOv2 weights (no torch needed)."""
import json
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx

from scm_jax.eval import dinov2, metrics, scores
from scm_jax.eval.extractor import get_extractor
from scm_jax.models import weights
from tests.cli.helpers import assert_one_line_error

TINY = dict(embed_dim=32, depth=1, num_heads=2, mlp_dim=64, patch_size=14)


def evaluate(*args):
    out = subprocess.run([sys.executable, "-m", "scm_jax.cli.evaluate", "--metric=dinov2", *args],
                         capture_output=True, text=True)
    return out.returncode, out.stderr


def test_fd_dinov2_is_zero_on_the_reference_images_and_grows_off_them(tmp_path):
    w, ref = str(tmp_path / "dinov2.npz"), str(tmp_path / "ref.npz")
    weights.save_module(w, dinov2.DINOv2(**TINY, rngs=nnx.Rngs(0)), config=TINY)
    real = np.random.default_rng(0).integers(0, 256, size=(48, 32, 32, 3), dtype=np.uint8)
    metrics.save_stats(ref, *metrics.feature_statistics(get_extractor("dinov2", w).features(real)), network="dinov2")
    fd = {}
    for name, images in (("real", real), ("dark", real // 4)):
        np.savez(tmp_path / f"{name}.npz", arr_0=images)
        rc, err = evaluate(f"--samples={tmp_path / name}.npz", f"--dinov2_weights={w}", f"--ref={ref}",
                           f"--out={tmp_path / name}.json")
        assert rc == 0, err
        fd[name] = json.loads((tmp_path / f"{name}.json").read_text())["fd_dinov2"]
    assert abs(fd["real"]) < 1e-3 < fd["dark"]


def test_missing_dinov2_weights_name_the_converter(tmp_path):
    np.savez(tmp_path / "s.npz", arr_0=np.zeros((4, 32, 32, 3), np.uint8))
    assert_one_line_error(*evaluate(f"--samples={tmp_path / 's.npz'}", "--ref=r.npz"), "convert_dinov2")


def test_reference_without_dinov2_statistics_names_make_ref(tmp_path):
    """An Inception-only reference (an ADM batch, or --make_ref without DINOv2 weights) holds mu / sigma only."""
    metrics.save_stats(tmp_path / "ref.npz", np.zeros(4), np.eye(4))
    with pytest.raises(ValueError, match="not 'mu_dinov2' and 'sigma_dinov2'.*--make_ref=OUT.npz"):
        scores.reference_stats(str(tmp_path / "ref.npz"), dim=None, network="dinov2")
