"""An image folder -> a latent data set: ADM centre crop to `resolution`, the SD-VAE's encoder in jitted batches
over the local devices, raw latents stored as float32 records with their per-channel mean / std, the VAE file and
the resolution in the set's metadata (`scm_jax.data.latents` defines the scaling the loader applies).

Images of any size and aspect ratio are accepted: the ADM crop brings each to `resolution` x `resolution`
(upsampling smaller ones, as ADM and EDM2 do for ImageNet-512, where most images are smaller than 512), so a folder
of mixed sizes is the normal case here, not an error. (Without a VAE, `import_folder` stores pixels at their own
size and refuses a second size naming the file, unless --resolution asks for the crop.)
"""
import os

import tensorflow_datasets as tfds
import tqdm
from etils import epath

from scm_jax.data import folders, importers, latents, storage
from scm_jax.data.moments import Moments
from scm_jax.models import vae as vae_lib


def encode_folder(
    path: str, data_dir: str, name: str, vae_path: str, resolution: int, *, split: str = "train",
    num_classes: int | None = None, batch_size: int = 32, workers: int | None = None,
) -> epath.Path:
    """Encodes the PNG/JPEG files of `path` (one subfolder per class, or flat) as data set `name`; returns its
    folder. Progress (images, img/s) goes to stderr."""
    vae = vae_lib.load_vae(vae_path)
    factor = vae.cfg.downsampling
    if resolution <= 0 or resolution % factor:
        raise ValueError(f"--resolution={resolution}: the VAE downsamples {factor}x, so the resolution must be a "
                         f"positive multiple of {factor} (e.g. 512 for 64x64 latents).")
    files, labels, class_names = importers.folder_images(path, num_classes)
    side = resolution // factor
    features = storage.ArrayFeatures((side, side, vae.cfg.latent_channels), latents=True, class_names=class_names)
    encode, moments = latents.encoder(vae, batch_size), Moments()

    def examples():
        with tqdm.tqdm(total=len(files), unit="img", desc=f"encoding {name}", smoothing=0.1) as progress:
            for start, batch in zip(range(0, len(files), batch_size),
                                    folders.image_batches(files, resolution, batch_size, workers)):
                raw = encode(batch)
                moments.add(raw.reshape(-1, raw.shape[-1]))
                for i, z in enumerate(raw):
                    yield features.encode(z, None if labels is None else labels[start + i])
                progress.update(len(raw))

    def metadata() -> dict:
        scale = latents.LatentScale.from_moments(moments)
        return {**scale.metadata(), latents.VAE_KEY: os.path.abspath(vae_path), "resolution": resolution}

    tfds.disable_progress_bar()  # ours counts images; tfds's would count records once more
    return storage.write_tfds(data_dir, name, features.tfds_features(), {split: examples()}, metadata=metadata)
