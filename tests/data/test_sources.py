"""Name resolution: embedded (built once), standard tfds sets under their real names, clear errors."""
import os

import numpy as np
import pytest

from scm_jax.data import pipeline, sources, storage
from tests.fakes import write_fake_cifar10


@pytest.fixture(scope="module")
def embedded_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("cache"))


def test_embedded_builds_once_and_loads_5000_labelled_images(embedded_dir):
    options = sources.DataOptions(name="embedded", data_dir=embedded_dir)
    source = sources.open_source(options)
    assert len(source) == 5000
    info = os.path.join(embedded_dir, "embedded_mnist5k", "1.0.0", "dataset_info.json")
    built_at = os.path.getmtime(info)
    assert len(sources.open_source(options)) == 5000 and os.path.getmtime(info) == built_at  # reused
    loader = pipeline.make_loader(
        source, global_batch_size=1000, process_index=0, process_count=1, seed=0, num_epochs=1,
        image_shape=(32, 32, 1),
    )
    batches = list(loader)
    images = np.concatenate([b["image"] for b in batches])
    labels = np.concatenate([b["label"] for b in batches])
    assert images.shape == (5000, 32, 32, 1) and images.dtype == np.float32
    assert images.min() == -1.0 and images.max() == 1.0
    assert labels.dtype == np.int32 and set(labels) == set(range(10))


def test_embedded_built_meanwhile_by_another_process(embedded_dir, monkeypatch):
    options = sources.DataOptions(name="embedded", data_dir=embedded_dir)
    sources.open_source(options)  # the peer's build
    checks, real = [], storage.is_prepared

    def first_check_misses_it(*args):
        checks.append(args)
        return len(checks) > 1 and real(*args)

    monkeypatch.setattr(storage, "is_prepared", first_check_misses_it)
    assert len(sources.open_source(options)) == 5000 and len(checks) == 2


def test_standard_set_under_its_real_name(tmp_path):
    images = write_fake_cifar10(str(tmp_path))
    source = sources.open_source(sources.DataOptions(name="cifar10", data_dir=str(tmp_path)))
    assert type(source).__name__ == "ArrayRecordDataSource" and len(source) == 16
    np.testing.assert_array_equal(source[3]["image"], images[3])
    loader = pipeline.make_loader(
        source, global_batch_size=8, process_index=0, process_count=1, seed=0, image_shape=(32, 32, 3)
    )
    assert next(loader)["image"].shape == (8, 32, 32, 3)
    with pytest.raises(ValueError, match="has splits \\['train'\\], not 'test'"):
        sources.open_source(sources.DataOptions(name="cifar10", data_dir=str(tmp_path), split="test"))


@pytest.mark.parametrize(
    "name, tfds_name, local",
    [("cifar10", "cifar10", "cifar10_local"), ("imagenet64", "imagenet_resized/64x64", "imagenet_resized_64x64_local")],
)
def test_unprepared_standard_set_says_where_and_how(tmp_path, name, tfds_name, local):
    with pytest.raises(FileNotFoundError) as error:
        sources.open_source(sources.DataOptions(name=name, data_dir=str(tmp_path)))
    message = str(error.value)
    assert f"tfds build {tfds_name} --data_dir={tmp_path} --file_format=array_record" in message
    assert f"python -m scm_jax.data.build --source=PATH --name={local} --data_dir={tmp_path}" in message


def test_unknown_name_and_bad_kind(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"(?s)'my_faces' not found in data_dir={tmp_path}.*--name=my_faces "):
        sources.open_source(sources.DataOptions(name="my_faces", data_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="kind must be one of"):
        sources.DataOptions(kind="voxels")


def test_tfrecord_set_asks_for_array_record(tmp_path):
    path = storage.write_arrays(str(tmp_path), "old", np.zeros((2, 4, 4, 3), np.uint8))
    info = (path / "dataset_info.json").read_text().replace('"array_record"', '"tfrecord"')
    (path / "dataset_info.json").write_text(info)  # as `tfds build` writes by default
    with pytest.raises(ValueError, match="stored as tfrecord.*--file_format=array_record"):
        sources.open_source(sources.DataOptions(name="old", data_dir=str(tmp_path)))
