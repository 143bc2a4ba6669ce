"""The data build's VAE encoding (`--vae`): what it stores, the scale it records, the decoder that inverts it, and
bad input as one `error:` line naming the file and the fix. A tiny random VAE at 32 px (4x4x4 latents)."""
import numpy as np
import pytest
from flax import nnx
from PIL import Image

from scm_jax.data import build, folders, latents
from scm_jax.data.sources import DataOptions, open_source
from scm_jax.eval import dinov2
from scm_jax.models import vae, weights

TINY_VAE = vae.VAEConfig(block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4)


@pytest.fixture(scope="module")
def tiny_vae(tmp_path_factory) -> str:
    path = str(tmp_path_factory.mktemp("vae") / "vae.npz")
    weights.save_module(path, vae.AutoencoderKL(TINY_VAE, rngs=nnx.Rngs(0)), vae.config_dict(TINY_VAE))
    return path


def _folder(root, sizes) -> str:
    root.mkdir()
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(root / f"{i:03d}.png")
    return str(root)


def test_stores_the_posterior_mean_of_the_adm_crop_and_decodes_back(tmp_path, tiny_vae):
    src = _folder(tmp_path / "src", [(40, 32), (32, 32), (20, 44), (64, 48), (33, 35)])  # mixed sizes: cropped
    build.build(src, "flat", str(tmp_path / "data"), vae=tiny_vae, resolution=32, batch_size=2)
    source = open_source(DataOptions(name="flat", data_dir=str(tmp_path / "data"), kind="latents"))
    raw = np.stack([source[i]["image"] for i in range(len(source))])
    files = folders.list_images(tmp_path / "src")[0]
    crops = np.stack([folders.load_image(f, 32) for f in files])
    model = vae.load_vae(tiny_vae)
    mean, _ = model.encode(crops / 127.5 - 1.0)
    np.testing.assert_allclose(raw, mean, atol=1e-5)
    scale = latents.recorded_scale(source)
    decoded = latents.decoder(model, scale, batch_size=3)(scale.normalize(raw))
    np.testing.assert_allclose(decoded, model.decode(raw), atol=1e-5)


@pytest.mark.parametrize("case, flags, message", [
    ("corrupt", ["--resolution=32"], "002.png is not a readable image"),
    ("other network", ["--resolution=32"], "holds the weights of another network"),
    ("resolution", ["--resolution=36"], "--resolution=36: the VAE downsamples 8x"),
    ("no resolution", [], "--vae needs --resolution=N"),
    ("npz", ["--resolution=32"], "--vae encodes an image folder"),
])
def test_bad_input_is_one_line_and_leaves_nothing(tmp_path, capsys, tiny_vae, case, flags, message):
    src = _folder(tmp_path / "src", [(32, 32)] * 3)
    if case == "corrupt":
        (tmp_path / "src" / "002.png").write_bytes(b"\x89PNG cut")
    if case == "npz":
        np.savez(tmp_path / "src" / "x.npz", images=np.zeros((2, 4, 4, 4), np.float32))
    vae_path = tiny_vae
    if case == "other network":
        vae_path = str(tmp_path / "dinov2.npz")
        config = dict(embed_dim=8, depth=1, num_heads=2, mlp_dim=16, patch_size=14)
        weights.save_module(vae_path, dinov2.DINOv2(**config, rngs=nnx.Rngs(0)), config)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        build.main([f"--source={src}", "--name=bad", f"--data_dir={out}", f"--vae={vae_path}", *flags])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert exit_.value.code == 2 and len(errors) == 1 and message in errors[0], errors
    assert not out.exists()
