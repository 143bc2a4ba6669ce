"""The grain loader: determinism, resumable state, per-process sharding, epochs, validation."""
import json

import numpy as np
import pytest

from scm_jax.data import latents, pipeline

N = 48  # records; record i has every pixel equal to i, so a batch's pixels name its records


def _source(n=N, dtype=np.uint8, shape=(2, 2, 1)):
    return [{"image": np.full(shape, i, dtype), "label": i % 10} for i in range(n)]


def _loader(source=None, **kwargs):
    defaults = dict(global_batch_size=8, process_index=0, process_count=1, seed=0)
    return pipeline.make_loader(_source() if source is None else source, **(defaults | kwargs))


def _ids(batch):
    """Record ids of a pixel batch (undoing the [-1, 1] scaling)."""
    return np.rint((batch["image"][:, 0, 0, 0] + 1) * 127.5).astype(int).tolist()


def _take(loader, count):
    return [_ids(next(loader)) for _ in range(count)]


def test_batch_contents():
    batch = next(_loader(shuffle=False))
    assert batch["image"].shape == (8, 2, 2, 1) and batch["image"].dtype == np.float32
    np.testing.assert_allclose(batch["image"][:, 0, 0, 0], np.arange(8) / 127.5 - 1)
    assert batch["label"].dtype == np.int32 and batch["label"].tolist() == [i % 10 for i in range(8)]


def test_same_seed_same_batches_and_epochs_reshuffle():
    first = _take(_loader(seed=3), 12)  # two epochs of 6 batches
    assert first == _take(_loader(seed=3), 12)
    assert first != _take(_loader(seed=4), 12)
    epoch1, epoch2 = sum(first[:6], []), sum(first[6:], [])
    assert sorted(epoch1) == sorted(epoch2) == list(range(N)) and epoch1 != epoch2


def test_state_round_trip_mid_epoch_continues_identically():
    loader = _loader(seed=1)
    _take(loader, 4)  # mid-epoch
    state = json.loads(json.dumps(loader.get_state()))
    expected = _take(loader, 5)  # crosses into the next epoch
    restored = _loader(seed=1)
    restored.set_state(state)
    assert _take(restored, 5) == expected


def test_two_processes_hold_disjoint_halves_of_each_global_batch():
    single = _take(_loader(seed=2), 9)
    halves = [_take(_loader(seed=2, process_index=p, process_count=2), 9) for p in (0, 1)]
    for step, global_batch in enumerate(single):
        first, second = halves[0][step], halves[1][step]
        assert len(first) == len(second) == 4 and not set(first) & set(second)
        assert first + second == global_batch


def test_state_restores_onto_another_process_count():
    loader = _loader(seed=5)
    _take(loader, 3)
    state, expected = loader.get_state(), _take(loader, 2)
    halves = []
    for p in (0, 1):
        restored = _loader(seed=5, process_index=p, process_count=2)
        restored.set_state(state)
        halves.append(_take(restored, 2))
    assert [a + b for a, b in zip(*halves)] == expected


def test_finite_epochs_stop_after_whole_global_batches():
    batches = list(_loader(source=_source(20), num_epochs=2, process_index=1, process_count=2))
    assert len(batches) == 40 // 8


def test_latents_are_scaled_to_sigma_d_by_their_recorded_scale():
    source = [{"image": np.full((2, 2, 4), i / 10, np.float32)} for i in range(8)]
    scale = latents.LatentScale(mean=(0.1, 0.2, 0.3, 0.4), std=(1.0, 2.0, 0.5, 0.25))
    batch = next(_loader(source, kind="latents", shuffle=False, latent_scale=scale))
    expected = (np.arange(8)[:, None] / 10 - np.array(scale.mean)) / np.array(scale.std) * 0.5  # sigma_d
    np.testing.assert_allclose(batch["image"][:, 0, 0], expected, rtol=1e-6)
    np.testing.assert_allclose(scale.denormalize(batch["image"]), np.stack([r["image"] for r in source]), atol=1e-6)
    assert batch["label"].tolist() == [0] * 8  # a set without labels
    with pytest.raises(ValueError, match="records no per-channel mean / std of its latents; rebuild it"):
        _loader(source, kind="latents")
    with pytest.raises(ValueError, match="the latent scale has 3 channels, the records 4"):
        _loader(source, kind="latents", latent_scale=latents.LatentScale((0.0,) * 3, (1.0,) * 3))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(global_batch_size=9, process_count=2), "multiple of process_count"),
        (dict(process_index=2, process_count=2), "process_index=2"),
        (dict(source=_source(5)), "fewer than one global batch"),
        (dict(source=_source(dtype=np.float32)), "needs uint8 images"),
        (dict(kind="latents"), "needs float arrays"),
        (dict(kind="voxels"), "kind must be"),
        (dict(image_shape=(32, 32, 3)), "expected \\(32, 32, 3\\)"),
    ],
)
def test_validation_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _loader(**kwargs)


def test_state_from_another_stream_is_rejected():
    state = _loader(seed=0).get_state()
    with pytest.raises(ValueError, match="saved for"):
        _loader(seed=1).set_state(state)


def test_out_of_range_label_is_an_error_in_the_batch_that_holds_it():
    source = _source()
    source[13]["label"] = 11  # batch 1 of the unshuffled stream
    loader = _loader(source, shuffle=False, num_classes=10)
    assert next(loader)["label"].max() == 7
    with pytest.raises(ValueError, match=r"data: a batch holds label 11 \(1 of 8 out of range\), outside "
                                         r"\[0, data.num_classes=10\)"):
        next(loader)
    assert next(_loader(source, num_classes=0))["label"].shape == (8,)  # 0: unconditional, labels unchecked
