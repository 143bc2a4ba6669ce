"""The latent ImageNet-512 loop on CPU with tiny random networks (issue 16): an image folder of mixed sizes ->
`python -m scm_jax.data.build --vae --resolution=512` -> `configs/imagenet512.py:diffusion,smoke` trains on the
user's set -> its latents decode to images -> `scm-evaluate --make_ref` and `--metric=all` score them.

The sampling step (scm-sample decoding a latent run) is not wired yet (issue 18); the training latents, decoded
with the set's recorded scale, stand in for samples."""
import json
import subprocess
import sys

import numpy as np
import pytest
from flax import nnx
from PIL import Image

from configs import imagenet512
from scm_jax.data import build, latents
from scm_jax.data.pipeline import make_loader
from scm_jax.data.sources import DataOptions, latent_scale, open_source
from scm_jax.eval import dinov2
from scm_jax.models import vae, weights
from scm_jax.samplers.images import to_uint8
from scm_jax.train.loop import train_and_evaluate
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


def test_imagenet512_smoke_trains_on_the_user_set_and_decoded_latents_score(latent_set, tmp_path):
    root, data_dir = latent_set
    config = imagenet512.get_config("diffusion,smoke")
    with config.unlocked():
        config.data.update(name="user_in512", data_dir=data_dir, num_classes=2)  # what the build printed
        config.train.steps = 2
    train_and_evaluate(config, str(tmp_path / "run"))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["data"]["name"] == "user_in512"

    source = open_source(DataOptions(name="user_in512", data_dir=data_dir, kind="latents"))
    scale = latents.recorded_scale(source)
    decode = latents.decoder(vae.load_vae(str(root / "vae.npz")), scale, batch_size=8)
    images = to_uint8(decode(scale.normalize(np.stack([source[i]["image"] for i in range(16)]))))
    assert images.shape == (16, 512, 512, 3)
    np.savez(tmp_path / "samples.npz", arr_0=images)

    nets = [f"--inception_weights={tmp_path / 'inception.npz'}", f"--dinov2_weights={tmp_path / 'dinov2.npz'}"]
    tiny_inception.write(str(tmp_path / "inception.npz"))
    weights.save_module(str(tmp_path / "dinov2.npz"), dinov2.DINOv2(**TINY_DINOV2, rngs=nnx.Rngs(0)), TINY_DINOV2)
    evaluate(f"--make_ref={tmp_path / 'ref.npz'}", f"--source={root / 'images'}", "--resolution=512", *nets)
    ref = np.load(tmp_path / "ref.npz")
    assert ref["mu"].shape == (16,) and ref["sigma_dinov2"].shape == (32, 32) and ref["pr_features"].shape == (16, 16)
    evaluate(f"--samples={tmp_path / 'samples.npz'}", "--metric=all", f"--ref={tmp_path / 'ref.npz'}", *nets)
    result = json.loads((tmp_path / "samples.all.json").read_text())
    assert {"fid", "fd_dinov2", "inception_score", "precision", "recall"} <= result.keys()
    assert all(np.isfinite(result[k]) for k in ("fid", "fd_dinov2", "inception_score"))


def evaluate(*args) -> None:
    out = subprocess.run([sys.executable, "-m", "tests.cli.tiny_inception", *args], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]

