"""The offline metric of the embedded MNIST-5k data set, with the shipped classifier."""
import numpy as np
import pytest

from scm_jax.data import embedded
from scm_jax.eval import embedded_metric, mnist_classifier


@pytest.fixture(scope="module")
def reference() -> embedded_metric.MnistReference:
    return embedded_metric.mnist_reference()


@pytest.fixture(scope="module")
def heldout() -> tuple[np.ndarray, np.ndarray]:
    images, labels = embedded.load_mnist5k()
    idx = mnist_classifier.heldout_split(labels)[1]
    return images[idx], labels[idx]


def test_heldout_split_takes_fifty_digits_of_each_class():
    labels = embedded.load_mnist5k()[1]
    train, heldout = mnist_classifier.heldout_split(labels)
    assert len(train) == 4500 and np.bincount(labels[heldout]).tolist() == [50] * 10
    assert not set(train) & set(heldout)


def test_real_heldout_digits_score_as_real(reference, heldout):
    images, labels = heldout
    m = embedded_metric.evaluate_samples(images, labels, reference)
    assert m["accuracy"] == pytest.approx(mnist_classifier.HELDOUT_ACCURACY, abs=0.01)
    assert m["confidence"] > 0.9 and m["class_entropy"] > 0.95 * np.log(10)
    assert m["classifier_score"] > 8.0 and m["precision"] > 0.8 and m["recall"] > 0.6
    noise = np.random.default_rng(0).integers(0, 256, size=images.shape, dtype=np.uint8)
    m_noise = embedded_metric.evaluate_samples(noise, None, reference)
    assert "accuracy" not in m_noise
    assert m_noise["fd"] > 20 * m["fd"], (m_noise["fd"], m["fd"])
    assert m_noise["precision"] < 0.05 and m_noise["recall"] < 0.05


def test_shuffled_labels_give_chance_accuracy(reference, heldout):
    images, labels = heldout
    shuffled = np.random.default_rng(1).permutation(labels)
    assert embedded_metric.evaluate_samples(images, shuffled, reference)["accuracy"] < 0.2


def test_one_class_has_low_class_entropy(reference, heldout):
    images, labels = heldout
    m = embedded_metric.evaluate_samples(images[labels == 3], None, reference)
    assert m["class_entropy"] < 0.5 and m["classifier_score"] < 1.5


def test_labels_must_match_images(reference, heldout):
    with pytest.raises(ValueError, match="one per image"):
        embedded_metric.evaluate_samples(heldout[0][:10], heldout[1][:9], reference)


@pytest.mark.slow
def test_training_reproduces_the_shipped_accuracy():
    images, labels = embedded.load_mnist5k()
    train, heldout = mnist_classifier.heldout_split(labels)
    model = mnist_classifier.train(images[train], labels[train])
    acc = mnist_classifier.accuracy(model, images[heldout], labels[heldout])
    assert acc == pytest.approx(mnist_classifier.HELDOUT_ACCURACY, abs=0.01)


@pytest.mark.parametrize("noise", [
    lambda rng, shape: rng.integers(0, 256, shape),
    lambda rng, shape: np.clip(rng.normal(127.5, 64, shape), 0, 255),
    lambda rng, shape: np.clip((rng.normal(size=shape) + 1) * 127.5, 0, 255),  # N(0, 1) in [-1, 1] pixels
], ids=["uniform", "gaussian", "standard normal"])
def test_noise_is_off_the_digit_manifold(reference, heldout, noise):
    """Precision/recall (k=3 against the 5,000 real digits) of noise is ~0, of held-out digits high."""
    images = np.rint(noise(np.random.default_rng(2), heldout[0].shape)).astype(np.uint8)
    m = embedded_metric.evaluate_samples(images, None, reference)
    assert m["precision"] < 0.02 and m["recall"] < 0.02, m


@pytest.mark.parametrize("labels, match", [(np.arange(10) + 1, r"in \[1, 10\]\) must be integers in \[0, 10\)"),
                                           (np.arange(10) * 0.5, "float64")])
def test_labels_outside_the_classes_are_refused(reference, heldout, labels, match):
    with pytest.raises(ValueError, match=match):
        embedded_metric.evaluate_samples(heldout[0][:10], labels, reference)
