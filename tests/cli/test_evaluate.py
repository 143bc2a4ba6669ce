"""scm-evaluate: the offline MNIST metric on real digits and bad input as one clear error."""
import json
import subprocess
import sys

import numpy as np
import pytest

from scm_jax.data.embedded import load_mnist5k


def evaluate(*args):
    out = subprocess.run([sys.executable, "-m", "scm_jax.cli.evaluate", *args], capture_output=True, text=True)
    return out.returncode, out.stderr


def test_real_digits_score_well_noise_scores_badly(tmp_path):
    images, labels = load_mnist5k()
    np.savez(tmp_path / "real.npz", arr_0=images[::10], arr_1=labels[::10])
    noise = np.random.default_rng(0).integers(0, 256, images[::10].shape).astype(np.uint8)
    np.savez(tmp_path / "noise.npz", arr_0=noise, arr_1=labels[::10])
    results = {}
    for name in ("real", "noise"):
        rc, err = evaluate(f"--samples={tmp_path / name}.npz", f"--out={tmp_path / name}.json")
        assert rc == 0, err
        results[name] = json.loads((tmp_path / f"{name}.json").read_text())
    assert results["real"]["accuracy"] > 0.95 and results["noise"]["accuracy"] < 0.3
    assert results["real"]["fd"] < 0.1 * results["noise"]["fd"]


@pytest.mark.parametrize("arrays, message", [
    ({"arr_0": np.full((8, 32, 32, 1), 0.5, np.float32)}, "ambiguous"),
    ({"arr_0": np.zeros((8, 32, 32), np.uint8)}, "NHWC"),
    ({"images": np.zeros((8, 32, 32, 1), np.uint8)}, "arr_0"),
])
def test_malformed_samples(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    rc, err = evaluate(f"--samples={tmp_path / 'bad.npz'}")
    assert rc == 2 and message in err, err


def test_inception_without_weights_names_the_converter(tmp_path):
    np.savez(tmp_path / "s.npz", arr_0=np.zeros((4, 32, 32, 3), np.uint8))
    rc, err = evaluate(f"--samples={tmp_path / 's.npz'}", "--metric=inception")
    assert rc == 2 and "convert_inception" in err, err


def test_inception_missing_weights_file(tmp_path):
    np.savez(tmp_path / "s.npz", arr_0=np.zeros((4, 32, 32, 3), np.uint8))
    rc, err = evaluate(f"--samples={tmp_path / 's.npz'}", "--metric=inception",
                       f"--inception_weights={tmp_path / 'none.npz'}", "--ref=x.npz")
    assert rc == 2 and "convert_inception" in err, err
