"""Latents of the SD-VAE: their scaling (the one place it is defined) and the encode / decode functions.

A latent data set (`python -m scm_jax.data.build --vae=WEIGHTS`) stores raw latents: the posterior mean of
`AutoencoderKL.encode` for each image (EDM2 stores mean and std and draws from the posterior at every read; the
mean is the deterministic choice). While it is written, the per-channel mean m and std s of the raw latents over
every position of every image are measured and recorded in the set's `metadata.json` (`latent_mean`,
`latent_std`, also the VAE file and the pixel resolution). The loader hands the model

    x = (raw - m) / s * sigma_d,        sigma_d = 0.5 (TrigFlow's data std, spec/math.md §1)

EDM2's scaling (`StabilityVAEEncoder`: scale = final_std / raw_std, bias = final_mean - raw_mean * scale with
final_mean 0, final_std 0.5): every channel has mean 0 and std sigma_d, like [-1, 1] pixels, so x / sigma_d is
unit-std. EDM2's fixed constants for ImageNet-512 are raw_mean (5.81, 3.25, 0.12, -2.15), raw_std (4.17, 4.62,
3.71, 3.28); here they are measured on the set itself. Samples go back with raw = x / sigma_d * s + m and the
VAE's decoder (`decoder`); `scm_jax.data.sources.latent_scale` reads the scale of a run's data set, and scm-train
records it with the VAE file in the run's config, where sampling finds it (`scm_jax.eval.decoding`).
"""
import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from scm_jax.data.moments import Moments
from scm_jax.formulations.trigflow import SIGMA_D
from scm_jax.models import vae as vae_lib
from scm_jax.parallel.batched import map_batches, over_local_devices

MEAN_KEY, STD_KEY, VAE_KEY = "latent_mean", "latent_std", "vae"
REBUILD = ("rebuild it with python -m scm_jax.data.build (--vae=WEIGHTS for an image folder, --kind=latents for "
           ".npz latents), which records the latents' per-channel mean and std")


@dataclasses.dataclass(frozen=True)
class LatentScale:
    """Per-channel mean and std of a data set's raw latents; maps them to and from the model's scale."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self):
        if len(self.mean) != len(self.std) or not all(s > 0 for s in self.std):
            raise ValueError(f"latent scale needs one mean and one positive std per channel, got {self}")

    @classmethod
    def from_record(cls, record) -> "LatentScale | None":
        """The scale under MEAN_KEY / STD_KEY of a mapping (a set's metadata, a run's config.data); None: none."""
        return cls(tuple(record[MEAN_KEY]), tuple(record[STD_KEY])) if record.get(MEAN_KEY) else None

    @classmethod
    def from_moments(cls, moments: Moments) -> "LatentScale":
        """The scale of the rows [positions, channels] added to `moments`."""
        return cls(tuple(map(float, moments.mean)), tuple(map(float, np.sqrt(np.diag(moments.covariance)))))

    def normalize(self, raw):
        """Raw VAE latents (NHWC, numpy or jax) -> x = (raw - m) / s * sigma_d, what the model sees."""
        return (raw - np.float32(self.mean)) * np.float32(np.divide(SIGMA_D, self.std))

    def denormalize(self, x):
        """The model's latents -> raw VAE latents: raw = x / sigma_d * s + m."""
        return x * np.float32(np.divide(self.std, SIGMA_D)) + np.float32(self.mean)

    def metadata(self) -> dict:
        return {MEAN_KEY: list(self.mean), STD_KEY: list(self.std)}


def recorded_scale(source) -> LatentScale | None:
    """The scale a tfds source records in its metadata (None: a source that records none)."""
    return LatentScale.from_record(_metadata(source))


def recorded_vae(source) -> str | None:
    """The VAE weights file a tfds source was encoded with (None: a source that records none)."""
    return _metadata(source).get(VAE_KEY)


def _metadata(source):
    info = getattr(source, "dataset_info", None)
    return (None if info is None else info.metadata) or {}


def _jitted(vae: vae_lib.AutoencoderKL, fn: Callable) -> Callable[[jax.Array], jax.Array]:
    """x -> fn(vae, x), jitted with the weights as arguments."""
    graphdef, state = nnx.split(vae)
    run = jax.jit(lambda state, x: fn(nnx.merge(graphdef, state), x))
    return lambda x: run(state, x)


def encoder(vae: vae_lib.AutoencoderKL, batch_size: int = 32) -> Callable[[np.ndarray], np.ndarray]:
    """uint8 images [N, H, W, 3] -> raw latents (posterior means) [N, H/8, W/8, 4] float32, in jitted batches split
    over the local devices."""
    run = _jitted(vae, lambda model, x: model.encode(x.astype(jnp.float32) / 127.5 - 1.0)[0])
    return lambda images: map_batches(run, images, batch_size, over_local_devices())


def decoder(vae: vae_lib.AutoencoderKL, scale: LatentScale, batch_size: int = 32
            ) -> Callable[[np.ndarray], np.ndarray]:
    """The model's latents [N, h, w, 4] (as sampled) -> images [N, 8h, 8w, 3] float32, about [-1, 1] and not
    clipped (`scm_jax.samplers.images.to_uint8` makes pixels of them), in jitted batches over the local devices."""
    run = _jitted(vae, lambda model, x: model.decode(scale.denormalize(x)))
    return lambda latents: map_batches(run, np.asarray(latents, np.float32), batch_size, over_local_devices())

