"""The latent ImageNet-512 loop on CPU with tiny random networks (issue 16): an image folder of mixed sizes ->
`python -m scm_jax.data.build --vae --resolution=512` -> a `configs/imagenet512.py:diffusion,smoke` teacher on the
user's set (grids and periodic FID on images decoded by the SD-VAE) -> an `:scd,smoke` student distilled from it ->
`scm-sample --vae --latents` (uint8 RGB at 512 px and the sampled latents) -> `scm-evaluate --metric=all` against
`--make_ref` statistics of the images. Without a VAE a run skips its grids with one warning (here) and scm-sample
refuses it (tests/test_inference.py)."""
import json
import logging
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx
from PIL import Image

from configs import imagenet512
from scm_jax.data import build
from scm_jax.data.pipeline import make_loader
from scm_jax.data.sources import DataOptions, latent_scale, open_source
from scm_jax.eval import dinov2
from scm_jax.models import vae, weights
from scm_jax.train import loop
from tests.cli import tiny_inception

TINY_VAE = vae.VAEConfig(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4)  # 8x down
TINY_DINOV2 = dict(embed_dim=32, depth=1, num_heads=2, mlp_dim=64, patch_size=14)
SIZES = [(96, 64), (64, 64), (80, 120), (50, 70)]  # mixed sizes and aspect ratios, all upsampled by the ADM crop


@pytest.fixture(scope="module")
def latent_set(tmp_path_factory):
    """(root, data_dir) of a 16-image, 2-class folder encoded at 512 px by a tiny random VAE."""
    root = tmp_path_factory.mktemp("latent_loop")
    rng = np.random.default_rng(0)
    for c, name in enumerate(("cat", "dog")):
        (root / "images" / name).mkdir(parents=True)
        for i in range(8):
            w, h = SIZES[i % len(SIZES)]
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8) // (c + 1)).save(
                root / "images" / name / f"{i}.png")
    weights.save_module(str(root / "vae.npz"), vae.AutoencoderKL(TINY_VAE, rngs=nnx.Rngs(0)),
                        vae.config_dict(TINY_VAE))
    build.main([f"--source={root / 'images'}", "--name=user_in512", f"--data_dir={root / 'data'}",
                f"--vae={root / 'vae.npz'}", "--resolution=512", "--batch_size=8"])
    return root, str(root / "data")


def test_latent_set_records_its_scale_and_the_loader_applies_it(latent_set):
    root, data_dir = latent_set
    source = open_source(DataOptions(name="user_in512", data_dir=data_dir, kind="latents"))
    raw = np.stack([source[i]["image"] for i in range(len(source))])
    assert raw.shape == (16, 64, 64, 4) and [int(source[i]["label"]) for i in (0, 15)] == [0, 1]
    scale = latent_scale(DataOptions(name="user_in512", data_dir=data_dir, kind="latents"))
    np.testing.assert_allclose(scale.mean, raw.mean(axis=(0, 1, 2)), rtol=1e-5)
    np.testing.assert_allclose(scale.std, raw.std(axis=(0, 1, 2)), rtol=1e-3)
    metadata = source.dataset_info.metadata
    assert metadata["resolution"] == 512 and metadata["vae"] == str(root / "vae.npz")
    batch = next(make_loader(source, global_batch_size=16, process_index=0, process_count=1, seed=0,
                             kind="latents"))
    np.testing.assert_allclose(batch["image"].mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(batch["image"].std(axis=(0, 1, 2)), 0.5, rtol=1e-3)  # sigma_d


def test_images_to_teacher_and_student_to_decoded_samples_to_scores(latent_set, tmp_path, monkeypatch):
    root, data_dir = latent_set
    tiny_inception.write(str(tmp_path / "inception.npz"))
    weights.save_module(str(tmp_path / "dinov2.npz"), dinov2.DINOv2(**TINY_DINOV2, rngs=nnx.Rngs(0)), TINY_DINOV2)
    nets = [f"--inception_weights={tmp_path / 'inception.npz'}", f"--dinov2_weights={tmp_path / 'dinov2.npz'}"]
    evaluate(f"--make_ref={tmp_path / 'ref.npz'}", f"--source={root / 'images'}", "--resolution=512", *nets)
    ref = np.load(tmp_path / "ref.npz")
    assert ref["mu"].shape == (16,) and ref["sigma_dinov2"].shape == (32, 32) and ref["pr_features"].shape == (16, 16)

    tiny_inception.patch(monkeypatch.setattr)  # the teacher's periodic FID, in this process
    teacher = train("diffusion,smoke", tmp_path / "teacher", data_dir, {  # decoding 512 px costs: few images
        "sample.num": 8, "eval.every_steps": 2, "eval.num_samples": 16, "eval.batch_size": 8, "eval.ode_steps": 2,
        "eval.metric": "inception", "eval.inception_weights": str(tmp_path / "inception.npz"),
        "eval.ref": str(tmp_path / "ref.npz")})
    recorded = json.loads((teacher / "config.json").read_text())["data"]
    assert recorded["vae"] == str(root / "vae.npz") and len(recorded["latent_std"]) == 4  # from the set's metadata
    grid = Image.open(next((teacher / "samples").glob("*.png")))
    assert grid.mode == "RGB" and grid.size == (3 * 512, 3 * 512)  # 8 decoded images, not RGBA latents
    logged = [json.loads(line) for line in (teacher / "metrics.jsonl").read_text().splitlines()]
    assert [np.isfinite(r[k]) for r in logged for k in r if k.endswith("/fid")] == [True]

    student = train("scd,smoke", tmp_path / "student", data_dir,
                    {"scm.teacher_workdir": str(teacher), "sample.every_steps": 0})
    out = tmp_path / "2step.npz"
    done = subprocess.run([sys.executable, "-m", "scm_jax.cli.sample", f"--workdir={student}", "--steps=2",
                           "--num=16", f"--vae={root / 'vae.npz'}", "--latents", f"--out={out}"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    written, sampled = np.load(out), np.load(tmp_path / "2step_latents.npz")
    images = written["arr_0"]
    assert images.dtype == np.uint8 and images.shape == (16, 512, 512, 3)
    np.testing.assert_array_equal(sampled["arr_1"], written["arr_1"])
    assert sampled["arr_0"].dtype == np.float32 and sampled["arr_0"].shape == (16, 64, 64, 4)
    np.testing.assert_array_equal(sampled["latent_std"], np.float32(recorded["latent_std"]))

    evaluate(f"--samples={out}", "--metric=all", f"--ref={tmp_path / 'ref.npz'}", *nets)
    result = json.loads((tmp_path / "2step.all.json").read_text())
    assert {"fid", "fd_dinov2", "inception_score", "precision", "recall"} <= result.keys()
    assert all(np.isfinite(result[k]) for k in ("fid", "fd_dinov2", "inception_score"))


def test_a_latent_run_without_a_vae_skips_grids_and_evaluation_with_one_warning(caplog):
    config = imagenet512.get_config("diffusion,smoke")  # no data.vae and no data set to record one from
    with caplog.at_level(logging.WARNING):
        assert loop.sample_decoder(config) is None
    assert len(caplog.records) == 1 and "names no VAE to decode them; pass --vae=WEIGHTS" in caplog.text


def train(arg: str, workdir: pathlib.Path, data_dir: str, overrides: dict) -> pathlib.Path:
    """A 2-step `configs/imagenet512.py:arg` run on the user's set with the flags the build printed."""
    config = imagenet512.get_config(arg)
    with config.unlocked():
        config.update_from_flattened_dict({"data.name": "user_in512", "data.data_dir": data_dir,
                                           "data.num_classes": 2, "train.steps": 2, **overrides})
    loop.train_and_evaluate(config, str(workdir))
    return workdir


def evaluate(*args) -> None:
    out = subprocess.run([sys.executable, "-m", "tests.cli.tiny_inception", *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
