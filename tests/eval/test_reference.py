"""Reference statistics from real images (`scm-evaluate --make_ref`): streamed moments equal numpy's, images are
picked evenly, bad sources are one clear error naming the file and the fix."""
import numpy as np
import pytest
from PIL import Image

from scm_jax.data.moments import Moments
from scm_jax.eval import reference


def test_streamed_moments_equal_numpy_on_data_with_a_large_mean():
    rows = np.random.default_rng(0).normal(1e4, 1.0, size=(1000, 3))
    moments = Moments()
    for i in range(0, 1000, 64):
        moments.add(rows[i:i + 64])
    np.testing.assert_allclose(moments.mean, rows.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(moments.covariance, np.cov(rows, rowvar=False), rtol=1e-9, atol=1e-12)


def test_images_are_spread_evenly_over_the_files():
    assert reference.evenly_spaced(10, 4).tolist() == [0, 3, 6, 9]
    assert reference.evenly_spaced(3, 50).tolist() == [0, 1, 2]


def test_bad_sources_name_the_file_and_the_fix(tmp_path):
    (tmp_path / "images").mkdir()
    for i in range(3):
        Image.new("RGB", (20, 30)).save(tmp_path / "images" / f"{i}.png")
    with pytest.raises(ValueError, match="is an image folder: give --resolution=N"):
        reference.image_batches(str(tmp_path / "images"), None, None)
    with pytest.raises(FileNotFoundError, match="nowhere does not exist"):
        reference.image_batches(str(tmp_path / "nowhere"), 16, None)
    np.savez(tmp_path / "ref.npz", arr_0=np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="holds 8x8 images, --resolution=16"):
        reference.image_batches(str(tmp_path / "ref.npz"), 16, None)
    (tmp_path / "images" / "1.png").write_bytes(b"\x89PNG cut")
    count, batches = reference.image_batches(str(tmp_path / "images"), 16, None, batch_size=2)
    with pytest.raises(ValueError, match="1.png is not a readable image"):
        list(batches)
    assert count == 3
