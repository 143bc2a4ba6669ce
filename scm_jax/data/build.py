"""Builds a tfds array_record data set from local files, without TensorFlow.

    python -m scm_jax.data.build --source=PATH --name=NAME --data_dir=DIR [--resolution=64] [--channels=1]
        [--kind=latents] [--num_classes=K]
    python -m scm_jax.data.build --source=IMAGE_DIR --name=NAME --data_dir=DIR --vae=sd_vae.npz --resolution=512

PATH is an image folder (one subfolder per class, or flat without labels), an `.npz` (uint8 pixels, or float
latents with --kind=latents, NHWC, under `images`/`arr_0`; labels 0..K-1 under `labels`/`arr_1`), a folder of
such `.npz` shards (read one at a time, in name order: how to import latents larger than memory), or `embedded`.
--resolution / --channels resize and convert folder images; for `.npz` arrays they must state the arrays' own
size and channels (4-channel pixels need --channels=4). K is max label + 1 with every class present, or
--num_classes. With --vae (weights from `python -m scm_jax.models.convert_vae`), an image folder is ADM-cropped to
--resolution and encoded to SD-VAE latents (64x64x4 at 512), with their per-channel mean / std recorded for the
loader's scaling (scm_jax/data/latents.py); --batch_size images per jitted call, over all local devices.
Bad input is one `error:` line naming the file, exit status 2, and leaves no data-set folder.
Prints the scm-train flags that train on the set.
"""
import argparse
import pathlib
import shutil
import sys
from collections.abc import Sequence

import tensorflow_datasets as tfds
from etils import epath

from scm_jax.data import encode, importers, storage


def build(
    source: str, name: str, data_dir: str, *, split: str = "train", resolution: int | None = None,
    channels: int | None = None, kind: str = "pixels", num_classes: int | None = None, vae: str | None = None,
    batch_size: int = 32,
) -> epath.Path:
    """Imports `source` as data set `name` under `data_dir` (encoded to latents by the VAE weights `vae`, if
    given); returns the written folder. A failed build removes the folders it created."""
    importers.check_import_name(name)
    created = [p for p in (pathlib.Path(data_dir), pathlib.Path(data_dir) / name) if not p.exists()]
    try:
        if vae is not None:
            return _encode(source, name, data_dir, split, resolution, channels, kind, num_classes, vae, batch_size)
        return _import(source, name, data_dir, split, resolution, channels, kind, num_classes)
    except BaseException:
        for folder in reversed(created):
            shutil.rmtree(folder, ignore_errors=True)
        raise


def _import(
    source: str, name: str, data_dir: str, split: str, resolution: int | None, channels: int | None, kind: str,
    num_classes: int | None,
) -> epath.Path:
    path = pathlib.Path(source)
    npz = dict(split=split, kind=kind, num_classes=num_classes, resolution=resolution, channels=channels)
    if source == "embedded":
        if any(v is not None for v in (resolution, channels, num_classes)) or kind != "pixels":
            raise ValueError("--source=embedded is stored as it ships (32x32x1 uint8, 10 classes); drop "
                             "--resolution, --channels, --kind and --num_classes.")
        return importers.import_embedded(data_dir, name)
    if path.suffix == ".npz":
        return importers.import_npz([source], data_dir, name, **npz)
    if path.is_file():
        raise ValueError(f"{source} is neither an .npz file nor a folder; see --help for the sources.")
    if path.is_dir() and any(path.glob("*.npz")):
        return importers.import_npz(sorted(map(str, path.glob("*.npz"))), data_dir, name, **npz)
    if kind != "pixels":
        raise ValueError(f"--kind={kind}: image folders hold pixels; latents come as .npz files.")
    return importers.import_folder(source, data_dir, name, split=split, resolution=resolution,
                                   channels=3 if channels is None else channels, num_classes=num_classes)


def _encode(
    source: str, name: str, data_dir: str, split: str, resolution: int | None, channels: int | None, kind: str,
    num_classes: int | None, vae: str, batch_size: int,
) -> epath.Path:
    path = pathlib.Path(source)
    if source == "embedded" or path.suffix == ".npz" or (path.is_dir() and any(path.glob("*.npz"))):
        raise ValueError(f"--vae encodes an image folder; {source} is not one (.npz latents are imported without "
                         "--vae, with --kind=latents).")
    if resolution is None or channels not in (None, 3) or kind != "pixels":
        raise ValueError("--vae needs --resolution=N (512 for ImageNet-512) and RGB images: drop --channels and "
                         "--kind (the set holds latents of N/8 x N/8 x 4).")
    if batch_size <= 0:
        raise ValueError(f"--batch_size={batch_size}; give a positive number of images per VAE call.")
    return encode.encode_folder(source, data_dir, name, vae, resolution, split=split, num_classes=num_classes,
                                batch_size=batch_size)


def train_flags(path: epath.Path, name: str, data_dir: str) -> str:
    """The scm-train overrides that train on the data set written to `path`."""
    features = storage.ArrayFeatures.from_tfds(tfds.builder_from_directory(str(path)).info.features)
    return f"--config.data.name={name} --config.data.data_dir={data_dir} {features.config_flags()}"


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scm_jax.data.build", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--source", required=True, help="image folder, .npz file, folder of .npz shards, or 'embedded'")
    parser.add_argument("--name", required=True, help="snake_case data set name")
    parser.add_argument("--data_dir", required=True, help="tfds data dir to write into")
    parser.add_argument("--split", default="train")
    parser.add_argument("--resolution", type=int, default=None, help="center-crop and resize folder images")
    parser.add_argument("--channels", type=int, default=None, choices=(1, 3, 4),
                        help="folder images: 1 or 3 (default 3); .npz: the arrays' own (4 to keep RGBA pixels)")
    parser.add_argument("--kind", default="pixels", choices=("pixels", "latents"),
                        help="pixels: uint8 images; latents: float arrays (.npz only)")
    parser.add_argument("--num_classes", type=int, default=None, help="classes K of labels 0..K-1")
    parser.add_argument("--vae", default=None, help="SD-VAE weights (.npz from scm_jax.models.convert_vae): encode "
                        "the image folder to latents at --resolution")
    parser.add_argument("--batch_size", type=int, default=32, help="--vae: images per jitted encoder call")
    args = parser.parse_args(argv)
    try:
        path = build(args.source, args.name, args.data_dir, split=args.split, resolution=args.resolution,
                     channels=args.channels, kind=args.kind, num_classes=args.num_classes, vae=args.vae,
                     batch_size=args.batch_size)
    except (ValueError, OSError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(2)
    print(f"Wrote {path}; train with {train_flags(path, args.name, args.data_dir)}")


if __name__ == "__main__":
    main()
