"""A run's outputs -> uint8 NHWC images, the one place this happens: scm-sample and scm_jax.load, the trainer's
grids and TensorBoard images, periodic evaluation.

Pixel runs' outputs in [-1, 1] are quantised (`samplers.images.to_uint8`). A latent run's (data.kind=latents) go
through the SD-VAE first (`data.latents.decoder`: raw = x / sigma_d * s + m, then the VAE's decoder) with the
scale scm-train recorded in its config (data.latent_mean / latent_std, the data set's; exports carry it). The VAE
is the file given (scm-sample --vae, scm_jax.load(vae=...)), else the config's data.vae (by default the file the
set was encoded with). Without one a latent run is refused (`MissingVAE`), never written as clipped latents.
"""
import dataclasses
import os
from collections.abc import Callable
from typing import Optional

import numpy as np
from ml_collections import ConfigDict

from scm_jax.data import latents
from scm_jax.models import vae as vae_lib
from scm_jax.samplers.images import to_uint8

HOW = ("pass --vae=WEIGHTS to scm-sample (vae=WEIGHTS to scm_jax.load, --config.data.vae=WEIGHTS to scm-train), the "
       "SD-VAE .npz of python -m scm_jax.models.convert_vae that encoded the data set")


class MissingVAE(ValueError):
    """A latent run with no VAE weights to decode its samples."""


@dataclasses.dataclass(frozen=True)
class Decoder:
    """outputs (gathered NHWC floats) -> uint8 images of `image_shape` (HWC); `vae`: the weights file of a latent
    run's decoder (None for pixels)."""
    decode: Callable[[np.ndarray], np.ndarray]
    image_shape: tuple[int, int, int]
    vae: Optional[str] = None

    def __call__(self, outputs: np.ndarray) -> np.ndarray:
        return self.decode(outputs)


def decoder(config: ConfigDict, vae: Optional[str] = None) -> Decoder:
    """The decoder of `config`'s run; `vae` overrides the config's data.vae (a latent run's SD-VAE weights)."""
    d = config.data
    if d.kind != "latents":
        if vae is not None:
            raise ValueError(f"vae={vae}: this run samples pixels (data.kind={d.kind}), nothing to decode; drop it.")
        return Decoder(to_uint8, (d.image_size, d.image_size, d.channels))
    path = vae or d.get("vae")
    if not path:
        raise MissingVAE(f"this run samples SD-VAE latents (data.kind=latents) and names no VAE to decode them; {HOW}.")
    if vae is None and not os.path.exists(path):
        raise MissingVAE(f"the run's VAE {path} (config data.vae) does not exist here; {HOW}.")
    scale = latents.LatentScale.from_record(d)
    if scale is None:
        raise ValueError("the run's config records no latent scale (data.latent_mean / latent_std, which scm-train "
                         "writes from its data set); rerun its scm-train command to record it.")
    model = vae_lib.load_vae(path)
    if model.cfg.latent_channels != d.channels:
        raise ValueError(f"{path} decodes {model.cfg.latent_channels}-channel latents, the run samples {d.channels}; "
                         f"{HOW}.")
    to_images, size = latents.decoder(model, scale), d.image_size * model.cfg.downsampling
    return Decoder(lambda x: to_uint8(to_images(x)), (size, size, model.cfg.in_channels), path)
