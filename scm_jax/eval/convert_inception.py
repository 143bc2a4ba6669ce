"""Converts pytorch_fid's FID Inception weights (a torch state dict) to the `.npz` that `load_inception` reads.

    python -m scm_jax.eval.convert_inception \
        --torch_weights=pt_inception-2015-12-05-6726825d.pth --out=inception_fid.npz

Needs torch only to unpickle the `.pth` (`pip install torch`); see scm_jax/eval/inception.py for the weights file.
"""
import argparse
from collections.abc import Mapping

import numpy as np
from flax import nnx

from scm_jax.eval import inception
from scm_jax.models import weights

# torch suffix -> (NNX suffix, layout change)
_RENAMES = {
    "conv.weight": ("conv.kernel", (2, 3, 1, 0)),  # OIHW -> HWIO
    "bn.weight": ("bn.scale", None),
    "bn.bias": ("bn.bias", None),
    "bn.running_mean": ("bn.mean", None),
    "bn.running_var": ("bn.var", None),
    "fc.weight": ("fc.kernel", (1, 0)),  # [out, in] -> [in, out]
    "fc.bias": ("fc.bias", None),
}
# Entries of the torch model that the FID network does not use.
_IGNORED_SUFFIXES = ("num_batches_tracked",)
_IGNORED_PREFIXES = ("AuxLogits.",)


def convert_state_dict(state_dict: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """torchvision-named Inception-v3 arrays -> NNX-named arrays of `FIDInceptionV3` (float32, NHWC layouts)."""
    out = {}
    for name, value in state_dict.items():
        if name.endswith(_IGNORED_SUFFIXES) or name.startswith(_IGNORED_PREFIXES):
            continue
        suffix = next((s for s in _RENAMES if name == s or name.endswith("." + s)), None)
        if suffix is None:
            raise ValueError(f"unexpected entry {name!r} in the torch state dict: is this the FID Inception "
                             "(pt_inception-2015-12-05-*.pth)?")
        new_suffix, axes = _RENAMES[suffix]
        array = np.asarray(value, dtype=np.float32)
        out[name[: len(name) - len(suffix)] + new_suffix] = array if axes is None else array.transpose(axes)
    # Fails naming the entry when one is missing or misshaped.
    weights.module_from_arrays(out, lambda: inception.FIDInceptionV3(rngs=nnx.Rngs(0)), source="the state dict")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch_weights", required=True, help="pt_inception-2015-12-05-6726825d.pth")
    parser.add_argument("--out", required=True, help="output .npz, e.g. inception_fid.npz")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError as e:
        raise SystemExit("converting needs torch to read the .pth: pip install torch") from e
    state_dict = torch.load(args.torch_weights, map_location="cpu", weights_only=True)
    arrays = convert_state_dict({k: v.numpy() for k, v in state_dict.items()})
    np.savez(args.out, **arrays)
    print(f"wrote {len(arrays)} arrays to {args.out}")


if __name__ == "__main__":
    main()
