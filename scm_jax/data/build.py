"""Builds a tfds array_record data set from local files, without TensorFlow.

    python -m scm_jax.data.build --source=PATH --name=NAME --data_dir=DIR [--resolution=64] [--channels=1]

PATH is an image folder (one subfolder per class, or flat without labels), an `.npz` (uint8 pixels or
float latents, NHWC, under `images`/`arr_0`; labels under `labels`/`arr_1`), a folder of such `.npz`
shards (read one at a time, in name order: how to import latents larger than memory), or `embedded`.
Train on it with data.name=NAME, data.data_dir=DIR.
"""
import argparse
import pathlib
from collections.abc import Sequence

from etils import epath

from scm_jax.data import importers


def build(
    source: str, name: str, data_dir: str, *, split: str = "train", resolution: int | None = None,
    channels: int = 3,
) -> epath.Path:
    """Imports `source` as data set `name` under `data_dir`; returns the written folder."""
    importers.check_import_name(name)
    if source == "embedded":
        return importers.import_embedded(data_dir, name)
    path = pathlib.Path(source)
    if path.suffix == ".npz":
        return importers.import_npz([source], data_dir, name, split=split)
    if path.is_file():
        raise ValueError(f"{source} is neither an .npz file nor a folder; see --help for the sources.")
    if path.is_dir() and any(path.glob("*.npz")):
        return importers.import_npz(sorted(map(str, path.glob("*.npz"))), data_dir, name, split=split)
    return importers.import_folder(
        source, data_dir, name, split=split, resolution=resolution, channels=channels
    )


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
    parser.add_argument("--channels", type=int, default=3, choices=(1, 3), help="folder images: 1 or 3")
    args = parser.parse_args(argv)
    path = build(
        args.source, args.name, args.data_dir, split=args.split, resolution=args.resolution,
        channels=args.channels,
    )
    print(f"Wrote {path}; train with data.name={args.name!r}, data.data_dir={args.data_dir!r}.")


if __name__ == "__main__":
    main()
