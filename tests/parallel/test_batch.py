"""The global batch split: global = data-parallel devices x microbatch x accumulation steps, or one clear error."""
import pytest

from scm_jax.parallel.batch import split_batch


@pytest.mark.parametrize("devices, microbatch, micro, accum", [
    (32, 16, 16, 4),     # ImageNet-512 on 4 A100 nodes: 64 per GPU as 4 x 16
    (8, 16, 16, 16),     # one node: 256 per GPU
    (32, 32, 32, 2),     # v5p-64 (32 chips) at 32 per chip
    (256, 16, 8, 1),     # more devices than the microbatch needs: no accumulation
    (32, 0, 64, 1),      # 0: the whole per-device batch
])
def test_microbatch_gives_the_accumulation_steps(devices, microbatch, micro, accum):
    split = split_batch(2048, microbatch, 1, devices)
    assert (split.microbatch, split.accum_steps) == (micro, accum)
    assert split.devices * split.microbatch * split.accum_steps == 2048
    assert f"{devices} devices x microbatch {micro} x {accum} accumulation steps" in str(split)


def test_grad_accum_steps_still_sets_the_split():
    split = split_batch(2048, 0, 4, 8)
    assert (split.per_device, split.microbatch, split.accum_steps) == (256, 64, 4)


@pytest.mark.parametrize("args, message", [
    ((2048, 26, 1, 32), "train.microbatch=26 does not divide the 64 images per device .* use train.microbatch=16"),
    ((2048, 16, 2, 8), "both set the accumulation"),
    ((2048, 0, 3, 8), "train.grad_accum_steps=3 does not divide the 256 images per device"),
    ((2048, 0, 1, 24), "not divisible by the 24 data-parallel devices"),
    ((2048, -1, 1, 8), "train.microbatch=-1"),
])
def test_impossible_splits_fail_in_one_line(args, message):
    with pytest.raises(ValueError, match=message) as error:
        split_batch(*args)
    assert "\n" not in str(error.value)
