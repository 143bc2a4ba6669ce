"""Non-finite loss / gradients: the update is skipped (state unchanged but the step), counted and logged; K in a
row abort with a clear error and leave a checkpoint holding the last good parameters."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scm_jax.train import loop
from tests.reliability.harness import assert_bitwise_equal, restore, smoke

BAD = {2, 4, 5, 6}  # 1-based steps fed a NaN batch: one isolated, then K = 3 in a row
K = 3


@pytest.fixture(scope="module")
def poisoned_run(tmp_path_factory):
    """An 8-step run whose batches at BAD are NaN; returns (workdir, error, {step: (state before, after)})."""
    workdir = tmp_path_factory.mktemp("nonfinite")
    seen, real = {}, loop.make_train_step

    def make(*args, **kwargs):
        train_step = real(*args, **kwargs)

        def poisoned(state, batch):
            step = int(state["step"]) + 1
            if step in BAD:
                batch = {**batch, "image": batch["image"] * jnp.nan}
            before = jax.device_get(state)
            state, metrics = train_step(state, batch)
            seen[step] = (before, jax.device_get(state))
            return state, metrics
        return poisoned

    config = smoke(**{"train.steps": 8, "train.log_every": 1, "train.max_bad_steps": K,
                      "checkpoint.async_save": False})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "make_train_step", make)
        with pytest.raises(FloatingPointError) as error:
            loop.train_and_evaluate(config, str(workdir))
    return workdir, error.value, seen


def test_nonfinite_step_is_skipped_counted_and_logged(poisoned_run):
    workdir, _, seen = poisoned_run
    before, after = seen[2]
    assert int(after["step"]) == 2
    assert_bitwise_equal({k: v for k, v in after.items() if k != "step"},
                         {k: v for k, v in before.items() if k != "step"})  # params, optimizer, EMAs, RNG
    assert not jax.tree.reduce(lambda a, b: a and b, jax.tree.map(
        lambda x, y: np.array_equal(x, y), seen[3][0]["params"], seen[3][1]["params"]))  # step 3 does update
    rows = [r for r in map(json.loads, (workdir / "metrics.jsonl").read_text().splitlines()) if "skipped_steps" in r]
    assert [r["skipped_steps"] for r in rows] == [0, 1, 0, 1, 1, 1]
    assert np.isnan(rows[1]["loss"])


def test_consecutive_nonfinite_steps_abort_with_last_good_checkpoint(poisoned_run):
    workdir, error, seen = poisoned_run
    assert "3 consecutive steps up to 6 had a non-finite loss or gradient" in str(error)
    assert "the last good checkpoint is step 5" in str(error) and "optim.lr" in str(error)
    assert max(seen) == 6  # aborted at once, step 7 never ran
    step, state, _ = restore(workdir)
    assert step == 5
    good = seen[3][1]  # the state after the last finite update
    assert_bitwise_equal({k: state[k] for k in ("params", "opt_state", "ema")},
                         {k: good[k] for k in ("params", "opt_state", "ema")})
