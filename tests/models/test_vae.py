"""The Flax SD-VAE against diffusers' `AutoencoderKL` with random weights, on CPU (no download).

Needs the `[torch-check]` extra (torch, diffusers, safetensors); skipped without it. Tolerance: max abs error
<= 1e-4 in float32 for the encoder's mean and logvar and the decoder's output (outputs are O(1)).
"""
import numpy as np
import pytest

from scm_jax.models import convert_vae, vae, weights
from tests.torch_check import import_reference
from tests.weight_files import assert_bad_files_refused

TOL = 1e-4
TINY = dict(block_out_channels=(16, 32, 32), norm_num_groups=8, layers_per_block=2)  # 4x down, as SD's last pair


def _diffusers_vae(block_out_channels, **config):
    """diffusers' AutoencoderKL with random weights, GroupNorm affines included (their init is 1 / 0)."""
    diffusers = import_reference("diffusers")
    import torch

    torch.manual_seed(0)
    n = len(block_out_channels)
    model = diffusers.AutoencoderKL(down_block_types=("DownEncoderBlock2D",) * n,
                                    up_block_types=("UpDecoderBlock2D",) * n, block_out_channels=block_out_channels,
                                    latent_channels=4, **config).eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.GroupNorm):
                torch.nn.init.uniform_(m.weight, 0.5, 1.5)
                torch.nn.init.uniform_(m.bias, -0.2, 0.2)
    return model


def _max_errors(model, path, size):
    """Max abs error of (mean, logvar, decoded) of the converted `path` vs `model` on random images / latents."""
    import torch

    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, size=(2, size, size, 3)).astype(np.float32)
    f = 2 ** (len(model.config.block_out_channels) - 1)
    z = rng.normal(size=(2, size // f, size // f, 4)).astype(np.float32)
    nchw = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2)
    with torch.no_grad():
        dist = model.encode(nchw(x)).latent_dist
        want = [t.permute(0, 2, 3, 1).numpy() for t in (dist.mean, dist.logvar, model.decode(nchw(z)).sample)]
    flax_vae = vae.load_vae(path)
    got = [*flax_vae.encode(x), flax_vae.decode(z)]
    assert [g.shape for g in got] == [w.shape for w in want]
    return [float(np.abs(np.asarray(g) - w).max()) for g, w in zip(got, want)]


def test_flax_vae_matches_diffusers(tmp_path):
    model = _diffusers_vae(**TINY)
    from safetensors.torch import save_file

    st, npz = str(tmp_path / "diffusion_pytorch_model.safetensors"), str(tmp_path / "vae.npz")
    save_file(model.state_dict(), st)
    convert_vae.main([f"--torch_weights={st}", f"--out={npz}", "--norm_num_groups=8"])
    errors = _max_errors(model, npz, size=16)
    print("max abs error mean / logvar / decoded:", errors)
    assert max(errors) <= TOL


def test_converter_reads_bin_with_old_attention_names(tmp_path):
    """sd-vae-ft-* uploads name the attention query / key / value / proj_attn; a .bin goes through torch."""
    import torch

    model = _diffusers_vae(**TINY)
    new = model.state_dict()
    old_names = {"to_q": "query", "to_k": "key", "to_v": "value", "to_out.0": "proj_attn"}
    old = {}
    for name, value in new.items():
        for a, b in old_names.items():
            name = name.replace(f"attentions.0.{a}.", f"attentions.0.{b}.")
        old[name] = value
    assert old.keys() != new.keys()
    torch.save(old, tmp_path / "old.bin")
    arrays_old, _ = convert_vae.convert_state_dict(weights.read_state_dict(str(tmp_path / "old.bin")), 8)
    arrays_new, _ = convert_vae.convert_state_dict({k: v.numpy() for k, v in new.items()}, 8)
    assert arrays_old.keys() == arrays_new.keys()
    assert all(np.array_equal(arrays_old[k], arrays_new[k]) for k in arrays_new)


def test_bad_weight_files_are_one_line_errors(tmp_path):
    with pytest.raises(ValueError, match="unexpected entry 'Mixed_5b.branch1x1.conv.weight'"):
        convert_vae.convert_state_dict({"Mixed_5b.branch1x1.conv.weight": np.zeros((1, 1, 1, 1))})
    with pytest.raises(ValueError, match="not a diffusers AutoencoderKL state dict"):
        convert_vae.convert_state_dict({"encoder.conv_in.weight": np.zeros((8, 3, 3, 3))})
    assert_bad_files_refused(vae.load_vae, tmp_path, "convert_vae")


@pytest.mark.slow
def test_full_sd_vae_matches_diffusers(tmp_path):
    """sd-vae-ft-mse's architecture (diffusers' AutoencoderKL defaults with 4 blocks), 64x64 images."""
    model = _diffusers_vae(block_out_channels=(128, 256, 512, 512), norm_num_groups=32, layers_per_block=2)
    arrays, cfg = convert_vae.convert_state_dict({k: v.numpy() for k, v in model.state_dict().items()})
    assert cfg == vae.VAEConfig()
    npz = str(tmp_path / "sd_vae.npz")

    weights.save_arrays(npz, arrays, vae.config_dict(cfg))
    errors = _max_errors(model, npz, size=64)
    print("max abs error mean / logvar / decoded:", errors)
    assert max(errors) <= TOL
