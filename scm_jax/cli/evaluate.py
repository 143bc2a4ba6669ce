"""scm-evaluate: samples (.npz in the ADM format, or an image folder) -> metrics as JSON.

    scm-evaluate --samples=runs/sct/samples/2step_1000.npz --metric=mnist          # offline, embedded data
    scm-evaluate --samples=s.npz --metric=inception --inception_weights=inception_fid.npz --ref=cifar10_ref.npz
    scm-evaluate --metric=inception --inception_weights=... --ref_data=cifar10 --data_dir=~/tfds --save_ref=ref.npz
    scm-evaluate --samples=s.npz --metric=dinov2 --dinov2_weights=dinov2_vitl14.npz --ref=ref.npz
    scm-evaluate --make_ref=ref.npz --source=IMAGE_DIR --resolution=512 --inception_weights=inception_fid.npz \
        --dinov2_weights=dinov2_vitl14.npz
    scm-evaluate --samples=s.npz --metric=all --inception_weights=... --dinov2_weights=... --ref=ref.npz

mnist: Fréchet distance in the shipped MNIST classifier's feature space, precision/recall against the 5,000
embedded digits, confidence, class entropy and, with labels (arr_1, integers in [0, 10)), class accuracy.
inception: FID (pool3, the FID network's semantics), Inception Score (10 splits) and, when the reference has
features (--ref_data, or a --make_ref file), precision/recall. dinov2: FD_DINOv2 (EDM2's) against --ref
statistics of DINOv2 features. all: both, for each network whose weights are given, over samples loaded once.
--make_ref writes mu / sigma of every network whose weights are given (and Inception features of up to 10,000
images for precision/recall) from real images: an image folder ADM-centre-cropped to --resolution (the data set's)
or an .npz of uint8 images; at most --ref_num images, spread evenly over the files (scm_jax/eval/reference.py).
Precision/recall (Kynkäänniemi et al. 2019) come with their k (3) and reference size in the JSON. Inception and
DINOv2 weights load from local files only (scm_jax.eval.convert_inception / convert_dinov2).
Bad input (a missing, corrupt or mixed-size file, labels outside the classes) exits 2 with one `error:` line.
"""
import json
import os

import numpy as np
from absl import flags, logging

from scm_jax.cli.common import run_app
from scm_jax.data import folders, importers
from scm_jax.data.pipeline import make_loader
from scm_jax.data.sources import DataOptions, open_source
from scm_jax.eval import embedded_metric, metrics, reference, scores
from scm_jax.eval.extractor import get_extractor
from scm_jax.eval.images import require_uint8
from scm_jax.samplers.images import to_uint8

_SAMPLES = flags.DEFINE_string("samples", None, ".npz (arr_0 uint8 NHWC, optional arr_1 labels) or image folder.")
_METRIC = flags.DEFINE_enum("metric", "mnist", list(scores.METRICS), "Feature network (all: inception and dinov2).")
_WEIGHTS = flags.DEFINE_string("inception_weights", None, "Converted FID Inception weights (.npz).")
_DINOV2_WEIGHTS = flags.DEFINE_string("dinov2_weights", None, "Converted DINOv2 ViT-L/14 weights (.npz).")
_REF = flags.DEFINE_string("ref", None, "Reference statistics .npz (mu, sigma), ours or an ADM reference batch.")
_REF_DATA = flags.DEFINE_string("ref_data", None, "Compute the reference from this data set (tfds name).")
_DATA_DIR = flags.DEFINE_string("data_dir", None, "tfds data dir of --ref_data.")
_REF_NUM = flags.DEFINE_integer("ref_num", 50_000, "Images of --ref_data / --source to use (at most all).")
_MAKE_REF = flags.DEFINE_string("make_ref", None, "Write reference statistics of --source's images here (.npz).")
_SOURCE = flags.DEFINE_string("source", None, "--make_ref: real images, an image folder or an .npz (uint8 NHWC).")
_RESOLUTION = flags.DEFINE_integer("resolution", None, "--make_ref from a folder: ADM centre crop to NxN.")
_SAVE_REF = flags.DEFINE_string("save_ref", None, "Write the reference statistics computed from --ref_data here.")
_OUT = flags.DEFINE_string("out", None, "Write the metrics as JSON here (default: next to --samples).")


def load_samples(path: str) -> tuple[np.ndarray, np.ndarray | None]:
    """uint8 NHWC images and labels (or None) from an ADM .npz or a folder of PNG/JPEG files."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"--samples={path} does not exist; make samples with scm-sample.")
    if os.path.isdir(path):
        return require_uint8(_folder_images(path), path), None
    images = importers.npz_array(path, ("arr_0",))
    if images is None:
        raise ValueError(f"{path} has no arr_0; an ADM sample file holds uint8 NHWC images under arr_0 (labels "
                         "under arr_1).")
    return require_uint8(images, f"{path} (arr_0)"), importers.npz_array(path, ("arr_1",))


def _folder_images(path: str) -> np.ndarray:
    """The PNG/JPEG files of a folder, in name order, as one NHWC array (all of one size and mode)."""
    files = sorted(f for f in os.listdir(path) if f.lower().endswith((".png", ".jpg", ".jpeg")))
    if not files:
        raise ValueError(f"--samples={path} holds no .png/.jpg images.")
    images = []
    for name in files:
        with folders.open_image(os.path.join(path, name)) as image:
            images.append(np.asarray(image))
        if images[-1].shape != images[0].shape:
            raise ValueError(f"{os.path.join(path, name)} is {_size(images[-1])}, {files[0]} {_size(images[0])}; "
                             "the samples of a folder share one size and mode.")
    images = np.stack(images)
    return images[..., None] if images.ndim == 3 else images


def _size(image: np.ndarray) -> str:
    return f"{image.shape[1]}x{image.shape[0]}" + (f"x{image.shape[2]}" if image.ndim == 3 else " grayscale")


def reference_features(extractor) -> np.ndarray:
    """Features of --ref_num images of --ref_data, read by the trainer's data layer."""
    source = open_source(DataOptions(name=_REF_DATA.value, data_dir=_DATA_DIR.value))
    n = min(_REF_NUM.value, len(source))
    batch = next(make_loader(source, global_batch_size=n, process_index=0, process_count=1, seed=0,
                             shuffle=False))
    return extractor.features(to_uint8(batch["image"]))


def data_reference(extractor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu, sigma, features) of --ref_data, the statistics saved to --save_ref if given."""
    features = reference_features(extractor)
    mu, sigma = metrics.feature_statistics(features)
    if _SAVE_REF.value:
        metrics.save_stats(_SAVE_REF.value, mu, sigma)
        logging.info("reference statistics of %d images of %s -> %s", len(features), _REF_DATA.value,
                     _SAVE_REF.value)
    return mu, sigma, features


def inception_metrics(images: np.ndarray | None) -> dict:
    """FID and IS against --ref, or against --ref_data with precision/recall too (None: only the reference)."""
    scores.require_inception_weights(_WEIGHTS.value)
    if _REF_DATA.value:
        extractor = get_extractor("inception", _WEIGHTS.value)
        mu_r, sigma_r, ref_features = data_reference(extractor)
        if images is None:
            return {}
        return scores.inception_scores(extractor, images, mu_r, sigma_r, ref_features)
    if _REF.value:
        return scores.make_scorer("inception", _WEIGHTS.value, _REF.value)(images, None)
    raise ValueError("--metric=inception needs a reference: --ref=stats.npz or --ref_data=NAME.")


def mnist_metrics(images: np.ndarray, labels: np.ndarray | None) -> dict:
    """The offline MNIST metric against the 5,000 embedded digits."""
    reference = embedded_metric.mnist_reference()
    return {**scores.make_scorer("mnist")(images, labels), **metrics.precision_recall_setting(len(reference.features))}


def make_reference() -> None:
    """--make_ref: the statistics of --source's images under every network whose weights are given."""
    weights = {name: w for name, w in (("inception", _WEIGHTS.value), ("dinov2", _DINOV2_WEIGHTS.value)) if w}
    if not weights or not _SOURCE.value:
        raise ValueError("--make_ref needs --source=IMAGE_DIR_OR_NPZ (the real images) and --inception_weights "
                         "(FID, IS, precision/recall) and / or --dinov2_weights (FD_DINOv2).")
    require = {"inception": scores.require_inception_weights, "dinov2": scores.require_dinov2_weights}
    for name, path in weights.items():
        require[name](path)
    count, batches = reference.image_batches(_SOURCE.value, _RESOLUTION.value, _REF_NUM.value)
    extractors = {name: get_extractor(name, path) for name, path in weights.items()}
    stats, pr_features = reference.reference_statistics(count, batches, extractors)
    metrics.save_reference(_MAKE_REF.value, stats, pr_features)
    logging.info("reference statistics (%s) of %d images of %s -> %s", ", ".join(stats), count, _SOURCE.value,
                 _MAKE_REF.value)


def main(argv) -> None:
    del argv
    if _MAKE_REF.value:
        make_reference()
        return
    if _SAMPLES.value is None:
        if _METRIC.value == "inception" and _REF_DATA.value and _SAVE_REF.value:
            inception_metrics(None)  # only the reference statistics
            return
        raise ValueError("--samples is required (an .npz from scm-sample or an image folder).")
    images, labels = load_samples(_SAMPLES.value)
    if _METRIC.value in ("dinov2", "all"):
        result = scores.make_scorer(_METRIC.value, _WEIGHTS.value, _REF.value,
                                    dinov2_weights=_DINOV2_WEIGHTS.value)(images, None)
    else:
        result = mnist_metrics(images, labels) if _METRIC.value == "mnist" else inception_metrics(images)
    result = {"samples": _SAMPLES.value, "metric": _METRIC.value, "num": int(len(images)), **result}
    out = _OUT.value or os.path.splitext(_SAMPLES.value)[0] + f".{_METRIC.value}.json"
    with open(out, "w") as fh:
        json.dump(result, fh, indent=2)
    logging.info("%s -> %s", json.dumps(result), out)


def run() -> None:
    run_app(main)


if __name__ == "__main__":
    run()
