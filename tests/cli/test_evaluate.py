"""scm-evaluate: the offline MNIST metric on real digits; bad input is one clear error line (exit code 2) naming
the fix, checked through the binary where it is wired and on the library function where it is raised."""
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from scm_jax.data.embedded import load_mnist5k
from scm_jax.eval import metrics, scores
from scm_jax.eval.extractor import get_extractor
from scm_jax.eval.images import require_uint8
from tests.cli.helpers import assert_one_line_error


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
    assert results["noise"]["precision"] < 0.05 and results["real"]["precision"] > 0.8
    assert results["real"]["precision_recall_k"] == 3 and results["real"]["precision_recall_reference_size"] == 5000


@pytest.mark.parametrize("arrays, message", [
    ({"arr_0": np.full((8, 32, 32, 1), 0.5, np.float32)}, "not uint8 pixels in [0, 255]; convert [-1, 1]"),
    pytest.param({"arr_0": np.zeros((8, 32, 32), np.uint8)}, "NHWC", marks=pytest.mark.slow),
    pytest.param({"images": np.zeros((8, 32, 32, 1), np.uint8)}, "arr_0", marks=pytest.mark.slow),
])
def test_malformed_samples(tmp_path, arrays, message):
    np.savez(tmp_path / "bad.npz", **arrays)
    assert_one_line_error(*evaluate(f"--samples={tmp_path / 'bad.npz'}"), message)


@pytest.mark.parametrize("images, message", [
    (np.linspace(-1, 1, 8 * 32 * 32).reshape(8, 32, 32, 1), "scm_jax.samplers.images.to_uint8(x)"),
    (np.full((8, 32, 32, 1), 200.0), "np.rint(x).astype(np.uint8)"),
    (np.full((8, 32, 32, 1), 1023, np.int32), "values in [1023, 1023]"),
    (np.full((8, 32, 32, 1), -3.0), "clip the samples to [-1, 1]"),
])
def test_samples_of_wrong_dtype_or_range_name_the_conversion(images, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        require_uint8(images, "s.npz")


@pytest.mark.parametrize("shape, message", [
    ((8, 28, 28, 1), "32x32 images"), ((8, 32, 32, 3), "1-channel"), ((8, 1, 32, 32), "1-channel")])
def test_mnist_metric_refuses_other_image_shapes(shape, message):
    with pytest.raises(ValueError, match=message):
        get_extractor("mnist").check_shape(shape)


def test_inception_without_weights_names_the_converter(tmp_path):
    np.savez(tmp_path / "s.npz", arr_0=np.zeros((4, 32, 32, 3), np.uint8))
    assert_one_line_error(*evaluate(f"--samples={tmp_path / 's.npz'}", "--metric=inception", "--ref=r.npz"),
                          "convert_inception")


def test_reference_of_another_feature_dimension(tmp_path):
    metrics.save_stats(tmp_path / "ref64.npz", np.zeros(64), np.eye(64))
    with pytest.raises(ValueError, match="statistics of 64-d features, the extractor gives 2048-d"):
        scores.reference_stats(str(tmp_path / "ref64.npz"))


def test_missing_weights_or_reference_files():
    with pytest.raises(FileNotFoundError, match="convert_inception"):
        scores.require_inception_weights("none.npz")
    with pytest.raises(FileNotFoundError, match="--make_ref=ref.npz --source=IMAGE_DIR"):
        scores.reference_stats("none.npz")


def _png_folder(folder, sizes):
    from PIL import Image
    folder.mkdir()
    for i, size in enumerate(sizes):
        Image.new("L", size).save(folder / f"{i:02d}.png")
    return folder


@pytest.mark.parametrize("write, message", [
    (lambda p: np.savez(p / "s.npz", arr_0=np.zeros((8, 32, 32, 1), np.uint8), arr_1=np.arange(8) + 5),
     "labels (int64, in [5, 12]) must be integers in [0, 10), the mnist metric's classes"),
    (lambda p: (p / "s.npz").write_text("not an archive"), "s.npz is not a readable .npz archive"),
    (lambda p: (_png_folder(p / "s", [(32, 32)] * 3) / "01.png").write_bytes(b"\x89PNG cut"),
     "01.png is not a readable image"),
    (lambda p: _png_folder(p / "s", [(32, 32), (32, 32), (28, 28)]), "02.png is 28x28 grayscale, 00.png 32x32"),
], ids=["labels", "not npz", "corrupt png", "mixed sizes"])
def test_bad_samples_name_the_file(tmp_path, write, message):
    write(tmp_path)
    sample = next(tmp_path.iterdir())
    assert_one_line_error(*evaluate(f"--samples={sample}"), message)
    assert [p.name for p in tmp_path.iterdir()] == [sample.name]  # no metrics file written
