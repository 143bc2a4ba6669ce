"""Importers and the build command: what goes in comes back out of tfds.data_source, without TensorFlow."""
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from scm_jax.data import build


def _read(data_dir, name, split="train"):
    source = tfds.data_source(name, split=split, data_dir=str(data_dir), download=False)
    return [source[i] for i in range(len(source))]


def _write_pngs(folder, images):
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:03d}.png")


def test_image_folder_with_classes_reads_back(tmp_path):
    rng = np.random.default_rng(0)
    cats, dogs = rng.integers(0, 256, (2, 3, 6, 5, 3), dtype=np.uint8)
    _write_pngs(tmp_path / "src" / "cat", cats)
    _write_pngs(tmp_path / "src" / "dog", dogs)
    build.main([f"--source={tmp_path / 'src'}", "--name=pets", f"--data_dir={tmp_path / 'out'}"])
    records = _read(tmp_path / "out", "pets")
    np.testing.assert_array_equal([r["image"] for r in records], np.concatenate([cats, dogs]))
    assert [int(r["label"]) for r in records] == [0, 0, 0, 1, 1, 1]
    info = tfds.builder_from_directory(str(tmp_path / "out" / "pets" / "1.0.0")).info
    assert info.features["label"].names == ["cat", "dog"]
    assert "tensorflow" not in sys.modules


def test_flat_folder_resized_grayscale(tmp_path):
    _write_pngs(tmp_path / "src", np.full((2, 20, 12, 3), 200, np.uint8))
    build.build(str(tmp_path / "src"), "flat", str(tmp_path), resolution=8, channels=1)
    records = _read(tmp_path, "flat")
    assert len(records) == 2 and "label" not in records[0]
    assert records[0]["image"].shape == (8, 8, 1) and (records[0]["image"] == 200).all()


def test_folder_with_mixed_sizes_asks_for_resolution(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "a.png")
    Image.new("RGB", (5, 4)).save(tmp_path / "b.jpg")
    with pytest.raises(ValueError, match="--resolution"):
        build.build(str(tmp_path), "mixed", str(tmp_path / "out"))
    assert not (tmp_path / "out" / "mixed" / "1.0.0").exists()


def test_npz_pixels_and_latents_read_back(tmp_path):
    rng = np.random.default_rng(1)
    images, labels = rng.integers(0, 256, (7, 4, 4, 3), dtype=np.uint8), rng.integers(0, 5, 7)
    np.savez(tmp_path / "pixels.npz", images, labels)  # arr_0, arr_1
    latents = rng.normal(size=(5, 2, 2, 4)).astype(np.float32)
    (tmp_path / "shards").mkdir()  # latents larger than memory come as shards, read one at a time
    np.savez(tmp_path / "shards" / "0.npz", images=latents[:3].astype(np.float16), labels=np.arange(3))
    np.savez(tmp_path / "shards" / "1.npz", images=latents[3:].astype(np.float16), labels=np.arange(3, 5))
    build.build(str(tmp_path / "pixels.npz"), "pix", str(tmp_path), num_classes=5)  # not every class occurs
    build.build(str(tmp_path / "shards"), "lat", str(tmp_path), split="validation", kind="latents")
    pix, lat = _read(tmp_path, "pix"), _read(tmp_path, "lat", "validation")
    np.testing.assert_array_equal([r["image"] for r in pix], images)
    np.testing.assert_array_equal([r["label"] for r in pix], labels)
    np.testing.assert_array_equal([r["image"] for r in lat], latents.astype(np.float16).astype(np.float32))
    assert [int(r["label"]) for r in lat] == list(range(5)) and lat[0]["image"].dtype == np.float32
    metadata = tfds.builder_from_directory(str(tmp_path / "lat" / "1.0.0")).info.metadata  # the loader's scale
    stored = latents.astype(np.float16).astype(np.float64).reshape(-1, 4)
    np.testing.assert_allclose(metadata["latent_mean"], stored.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(metadata["latent_std"], stored.std(axis=0, ddof=1), rtol=1e-9)


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        build.build(str(tmp_path / "nowhere"), "x", str(tmp_path))
    (tmp_path / "images.zip").write_bytes(b"")
    with pytest.raises(ValueError, match="neither an .npz file nor a folder"):
        build.build(str(tmp_path / "images.zip"), "zipped", str(tmp_path))
    np.savez(tmp_path / "ints.npz", images=np.zeros((2, 4, 4, 3), np.int64))
    with pytest.raises(ValueError, match="ints.npz holds int64 images; pixels must be uint8"):
        build.build(str(tmp_path / "ints.npz"), "ints", str(tmp_path))
    np.savez(tmp_path / "other.npz", pictures=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="expected images under"):
        build.build(str(tmp_path / "other.npz"), "other", str(tmp_path))
    with pytest.raises(ValueError, match="registered in tfds"):
        build.build("embedded", "cifar10", str(tmp_path))
    with pytest.raises(ValueError, match="snake_case"):
        build.build(str(tmp_path / "ints.npz"), "My-Set", str(tmp_path))
    np.savez(tmp_path / "ok.npz", np.zeros((2, 4, 4, 3), np.uint8))
    build.build(str(tmp_path / "ok.npz"), "ok", str(tmp_path))
    with pytest.raises(FileExistsError, match="already holds"):
        build.build(str(tmp_path / "ok.npz"), "ok", str(tmp_path))


_RNG = np.random.default_rng(2)
_DIGITS = _RNG.integers(0, 256, (12, 8, 8, 1), dtype=np.uint8)
_LATENTS = _RNG.normal(size=(12, 4, 4, 4)).astype(np.float32)


def _bad_sources(tmp_path) -> dict:
    """Name -> the --source of each bad input (files written under tmp_path/src)."""
    src = tmp_path / "src"
    src.mkdir()
    np.savez(src / "floats.npz", images=_DIGITS / 255.0)
    np.savez(src / "nan.npz", images=np.where(np.arange(12)[:, None, None, None] == 7, np.nan, _LATENTS))
    np.savez(src / "rgba.npz", images=np.repeat(_DIGITS, 4, axis=-1))
    np.savez(src / "labels.npz", images=_DIGITS, labels=np.arange(12) % 10 + 5)
    np.savez(src / "ok.npz", images=_DIGITS, labels=np.arange(12) % 3)
    (src / "text.npz").write_text("not an archive")
    _write_pngs(src / "pngs", _DIGITS[:2, ..., 0])
    (src / "pngs" / "002.png").write_bytes(b"\x89PNG truncated")
    return {k: str(src / v) for k, v in {"floats": "floats.npz", "nan": "nan.npz", "rgba": "rgba.npz",
                                         "labels": "labels.npz", "ok": "ok.npz", "text": "text.npz",
                                         "pngs": "pngs"}.items()}


@pytest.mark.parametrize("source, flags, message", [
    ("floats", [], "floats.npz holds float64 images; pixels must be uint8 in [0, 255]"),
    ("nan", ["--kind=latents"], "nan.npz: record 7: holds NaN or Inf values"),
    ("ok", ["--kind=latents"], "ok.npz holds uint8 images; --kind=latents needs float arrays"),
    ("rgba", [], "rgba.npz holds 4-channel (RGBA?) pixels; drop the alpha channel"),
    ("labels", [], "labels.npz: labels take 10 values in [5, 14]; labels must be 0..K-1"),
    ("labels", ["--num_classes=10"], "labels.npz: labels lie in [5, 14], outside [0, 10)"),
    ("ok", ["--resolution=16"], "ok.npz holds 8x8 images, --resolution=16"),
    ("ok", ["--channels=3"], "ok.npz holds 1-channel images, --channels=3"),
    ("text", [], "text.npz is not a readable .npz archive"),
    ("pngs", [], "002.png is not a readable image"),
    ("pngs", ["--num_classes=3"], "pngs has 0 class subfolders, --num_classes=3"),
], ids=["float pixels", "nan latents", "uint8 latents", "rgba", "labels not 0..K-1", "labels over num_classes",
        "resolution", "channels", "not npz", "corrupt png", "num_classes vs folders"])
def test_bad_input_is_one_line_naming_the_file_and_leaves_nothing(tmp_path, capsys, source, flags, message):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        build.main([f"--source={_bad_sources(tmp_path)[source]}", "--name=bad", f"--data_dir={out}", *flags])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert exit_.value.code == 2 and len(errors) == 1 and message in errors[0], errors
    assert not out.exists()


def test_failed_build_into_an_existing_data_dir_leaves_it_as_it_was(tmp_path):
    (tmp_path / "out").mkdir()
    np.savez(tmp_path / "nan.npz", images=np.full((3, 2, 2, 1), np.nan, np.float32))
    with pytest.raises(ValueError, match="record 0: holds NaN"):
        build.build(str(tmp_path / "nan.npz"), "bad", str(tmp_path / "out"), kind="latents")
    assert list((tmp_path / "out").iterdir()) == []


def test_hint_names_every_config_flag(tmp_path, capsys):
    np.savez(tmp_path / "set.npz", images=_LATENTS, labels=np.arange(12) % 4)
    build.main([f"--source={tmp_path / 'set.npz'}", "--name=lat4", f"--data_dir={tmp_path}", "--kind=latents",
                "--num_classes=5"])
    assert capsys.readouterr().out.strip().endswith(
        f"train with --config.data.name=lat4 --config.data.data_dir={tmp_path} --config.data.image_size=4 "
        "--config.data.channels=4 --config.data.num_classes=5 --config.data.kind=latents")
    np.savez(tmp_path / "rgba.npz", images=np.repeat(_DIGITS, 4, axis=-1))  # stated: kept
    build.build(str(tmp_path / "rgba.npz"), "rgba", str(tmp_path), channels=4)
    assert _read(tmp_path, "rgba")[0]["image"].shape == (8, 8, 4)
