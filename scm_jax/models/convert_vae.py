"""Converts diffusers' `AutoencoderKL` weights (a torch state dict) to the `.npz` that `load_vae` reads.

    python -m scm_jax.models.convert_vae --torch_weights=diffusion_pytorch_model.safetensors --out=sd_vae.npz

Reads `.safetensors` with the `safetensors` package (no torch) and `.bin` / `.pt` with torch. The architecture
(channels, blocks, layers per block, latent channels) is read from the tensors' shapes; only the GroupNorm group
count is not in them (`--norm_num_groups`, 32 for the SD VAEs). Both diffusers' attention names (`to_q`,
`to_out.0`) and the older ones of the sd-vae-ft-* uploads (`query`, `proj_attn`) are accepted.
"""
import argparse
import re
from collections.abc import Mapping

import numpy as np
from flax import nnx

from scm_jax.models import vae, weights

_OLD_ATTENTION_NAMES = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out", "to_out.0": "to_out"}
_PREFIXES = ("encoder.", "decoder.", "quant_conv.", "post_quant_conv.")


def _nnx_name(name: str, array: np.ndarray) -> tuple[str, np.ndarray]:
    """One diffusers entry -> (NNX path, array in NHWC / [in, out] layout)."""
    for old, new in _OLD_ATTENTION_NAMES.items():
        name = name.replace(f".attentions.0.{old}.", f".attentions.0.{new}.")
    stem, _, leaf = name.rpartition(".")
    attention_linear = re.search(r"\.to_(q|k|v|out)$", stem) is not None
    if leaf == "weight" and attention_linear:  # [out, in] (or [out, in, 1, 1] in old conversions) -> [in, out]
        return f"{stem}.kernel", array.reshape(array.shape[:2]).T
    if leaf == "weight" and array.ndim == 4:  # conv OIHW -> HWIO
        return f"{stem}.kernel", array.transpose(2, 3, 1, 0)
    if leaf == "weight" and array.ndim == 1:  # GroupNorm
        return f"{stem}.scale", array
    return name, array


def infer_config(state_dict: Mapping[str, np.ndarray], norm_num_groups: int = 32) -> vae.VAEConfig:
    """The VAEConfig whose shapes the state dict has."""
    try:
        blocks = sorted({int(m.group(1)) for k in state_dict if (m := re.match(r"encoder\.down_blocks\.(\d+)\.", k))})
        channels = tuple(int(state_dict[f"encoder.down_blocks.{i}.resnets.0.conv1.weight"].shape[0]) for i in blocks)
        layers = len({k.split(".")[4] for k in state_dict if k.startswith("encoder.down_blocks.0.resnets.")})
        return vae.VAEConfig(block_out_channels=channels, layers_per_block=layers, norm_num_groups=norm_num_groups,
                             in_channels=int(state_dict["encoder.conv_in.weight"].shape[1]),
                             latent_channels=int(state_dict["post_quant_conv.weight"].shape[0]))
    except (KeyError, IndexError, ValueError) as e:
        raise ValueError(f"not a diffusers AutoencoderKL state dict (no entry {e}): is this the VAE's "
                         "diffusion_pytorch_model.safetensors / .bin?") from None


def convert_state_dict(state_dict: Mapping[str, np.ndarray], norm_num_groups: int = 32
                       ) -> tuple[dict[str, np.ndarray], vae.VAEConfig]:
    """diffusers-named AutoencoderKL arrays -> (NNX-named float32 arrays of `vae.AutoencoderKL`, its config)."""
    foreign = [k for k in state_dict if not k.startswith(_PREFIXES)]
    if foreign:
        raise ValueError(f"unexpected entry {foreign[0]!r} in the state dict: is this diffusers' AutoencoderKL "
                         "(the VAE's diffusion_pytorch_model.safetensors / .bin)?")
    cfg = infer_config(state_dict, norm_num_groups)
    out = dict(_nnx_name(k, np.asarray(v, dtype=np.float32)) for k, v in state_dict.items())
    # Fails naming the entry when one is missing or misshaped.
    weights.module_from_arrays(out, lambda: vae.AutoencoderKL(cfg, rngs=nnx.Rngs(0)), source="the state dict")
    return out, cfg


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch_weights", required=True, help="diffusion_pytorch_model.safetensors or .bin")
    parser.add_argument("--out", required=True, help="output .npz, e.g. sd_vae.npz")
    parser.add_argument("--norm_num_groups", type=int, default=32, help="the config.json's norm_num_groups")
    args = parser.parse_args(argv)
    arrays, cfg = convert_state_dict(weights.read_state_dict(args.torch_weights), args.norm_num_groups)
    weights.save_arrays(args.out, arrays, vae.config_dict(cfg))
    print(f"wrote {len(arrays)} arrays ({cfg}) to {args.out}")


if __name__ == "__main__":
    main()
