"""Input validation and batching of the feature-extractor interface (the shipped MNIST classifier, a toy net)."""
import numpy as np
import pytest
from flax import nnx

from scm_jax.eval import extractor as extractor_lib
from scm_jax.eval import images as images_lib
from scm_jax.eval import inception


@pytest.fixture(scope="module")
def mnist() -> extractor_lib.Extractor:
    return extractor_lib.get_extractor("mnist", batch_size=16)


def _digits(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(n, 32, 32, 1), dtype=np.uint8)


@pytest.mark.parametrize("bad, error, match", [
    (np.zeros((32, 32, 1), np.uint8), ValueError, "rank 4"),
    (np.zeros((2, 32, 32, 4), np.uint8), ValueError, "1 or 3 channels"),
    (np.zeros((2, 3, 32, 32), np.uint8), ValueError, "NCHW"),
    (np.zeros((2, 8, 8, 1), np.int32), TypeError, "uint8 or floating"),
    (np.full((2, 8, 8, 1), 0.5, np.float32), ValueError, "ambiguous"),
    (np.full((2, 8, 8, 1), -1.5, np.float32), ValueError, "Clip"),
    (np.full((2, 8, 8, 1), np.nan, np.float32), ValueError, "NaN"),
])
def test_check_images_refuses_with_the_fix(bad, error, match):
    with pytest.raises(error, match=match):
        images_lib.check_images(bad)


def test_uint8_and_float_ranges_give_the_same_features(mnist):
    digits = _digits(20)
    reference = mnist.features(digits)
    assert reference.shape == (20, 128) and reference.dtype == np.float32
    np.testing.assert_allclose(mnist.features(digits.astype(np.float32)), reference, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mnist.features(digits / 127.5 - 1.0), reference, rtol=1e-5, atol=1e-5)


def test_batching_and_padding_do_not_change_outputs(mnist):
    digits = _digits(37)  # 16 + 16 + 5 (zero-padded)
    features, logits = mnist.features_and_logits(digits)
    whole = extractor_lib.get_extractor("mnist", batch_size=64)
    np.testing.assert_allclose(features, whole.features(digits), rtol=1e-5, atol=1e-5)
    assert logits.shape == (37, 10)


def test_mnist_extractor_refuses_colour_images(mnist):
    with pytest.raises(ValueError, match="takes 1-channel images"):
        mnist.features(np.zeros((2, 32, 32, 3), np.uint8))


class _ChannelMeans(nnx.Module):
    def __call__(self, x):
        return x.mean(axis=(1, 2)), x.sum(axis=(1, 2, 3))[:, None]


def test_grayscale_is_repeated_for_three_channel_networks():
    toy = extractor_lib.Extractor("toy", 3, 3, 1, extractor_lib._bind(_ChannelMeans(), channels=3))
    gray = _digits(4)
    np.testing.assert_allclose(toy.features(gray), toy.features(np.repeat(gray, 3, axis=-1)), rtol=1e-6)


def test_unknown_name_and_missing_inception_weights_are_explained(tmp_path):
    with pytest.raises(ValueError, match="choose one of"):
        extractor_lib.get_extractor("vgg")
    with pytest.raises(ValueError, match="convert_inception"):
        extractor_lib.get_extractor("inception")
    with pytest.raises(FileNotFoundError, match="python -m scm_jax.eval.convert_inception"):
        inception.load_inception(str(tmp_path / "inception_fid.npz"))
