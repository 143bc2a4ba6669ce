"""Each shipped accelerator config's per-device microbatch fits the topologies its docstring and docs/runbook.md
name, by the scm-plan maxima recorded in docs/scale.md (read from the doc here: no compile)."""
import os
import re

import pytest

from configs import imagenet512, imagenet64
from scm_jax.parallel.batch import split_batch

SCALE_MD = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs", "scale.md")

# (config, topology, data-parallel devices, pattern in docs/scale.md whose number is the largest fitting batch)
PLANS = [
    (imagenet512, "8x A100-80GB node", 8, r"the largest batch within 72\.9 GiB is (\d+) per GPU"),
    (imagenet512, "4 A100-80GB nodes", 32, r"the largest batch within 72\.9 GiB is (\d+) per GPU"),
    (imagenet512, "8x H100 node", 8, r"than for A100s \([\d.]+ GiB at (\d+) images; XLA:GPU"),  # max not planned
    (imagenet512, "v5p-64 slice (32 chips)", 32, r"at most (\d+) images per v5p chip"),
    (imagenet64, "8x A100-80GB node", 8, r"the search answers (\d+)"),
    (imagenet64, "4 A100-80GB nodes", 32, r"the search answers (\d+)"),
]


def planned_maximum(pattern: str) -> int:
    with open(SCALE_MD) as fh:
        text = " ".join(fh.read().split())  # the doc wraps lines anywhere
    found = re.findall(pattern, text)
    assert len(set(found)) == 1, f"docs/scale.md: {pattern!r} found {found}; update PLANS with the doc"
    return int(found[0])


@pytest.mark.parametrize("module, topology, devices, pattern", PLANS, ids=lambda p: getattr(p, "__name__", p))
def test_shipped_microbatch_fits_the_plan(module, topology, devices, pattern):
    config = module.get_config("scd")
    split = split_batch(config.train.batch_size, config.train.microbatch, config.train.grad_accum_steps, devices)
    assert split.microbatch <= planned_maximum(pattern), f"{module.__name__} on {topology}: {split}"
