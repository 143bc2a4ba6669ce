"""kill -9 (three times, one during an async checkpoint write), SIGTERM and a truncated latest checkpoint during a
real 12-step `scm-train` run: the resumed run ends bitwise equal to an uninterrupted one, data order included."""
import concurrent.futures
import logging
import os
import random
import shutil
import signal
import time

import pytest

from scm_jax.checkpoint import CORRUPT_SUBDIR
from scm_jax.train import runs
from scm_jax.train.loop import train_and_evaluate
from tests.reliability.harness import (assert_bitwise_equal, launch, restore, smoke, steps, wait_for,
                                       writing)

pytestmark = pytest.mark.slow  # ~2-4 min: five scm-train processes; run with `python -m pytest -m slow`
SEED = int(os.environ.get("SCM_KILL_SEED", time.time_ns() % 2**31))  # rerun a failure with SCM_KILL_SEED=<seed>


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    """The interrupted sequence (a thread driving subprocesses) and, meanwhile, the uninterrupted 12-step run
    (in-process, in the main thread for its signal handlers; same programs as the CLI's, see harness.ENV)."""
    straight_dir, workdir = (tmp_path_factory.mktemp(name) / "run" for name in ("straight", "interrupted"))
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        events = pool.submit(interrupt, workdir, random.Random(SEED))
        expected = train_and_evaluate(smoke(), str(straight_dir))
        events = events.result()
    return (straight_dir, expected), (workdir, events, train_and_evaluate(smoke(), str(workdir)))


@pytest.fixture(scope="module")
def straight(both):
    return both[0]


@pytest.fixture(scope="module")
def interrupted(both):
    return both[1]


def interrupt(workdir, rng: random.Random) -> list[dict]:
    """3 kill -9 and a SIGTERM of real scm-train subprocesses, all before the last step."""
    events = [kill_during_async_write(workdir), kill_at_random(workdir, rng), kill_at_random(workdir, rng),
              terminate(workdir)]
    assert steps(workdir)[-1] < 12, events
    return events


def kill_during_async_write(workdir) -> dict:
    proc = launch(workdir)
    wait_for(lambda: bool(steps(workdir)) and writing(workdir), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return {"how": "SIGKILL during an async checkpoint write", "left_half_written": writing(workdir),
            "committed": steps(workdir)}


def kill_at_random(workdir, rng: random.Random) -> dict:
    target = steps(workdir)[-1] + rng.randint(1, 2)
    delay = rng.uniform(0.0, 1.0)
    proc = launch(workdir)
    wait_for(lambda: steps(workdir)[-1] >= target, proc)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    return {"how": f"SIGKILL {delay:.2f} s after step {target} was committed", "committed": steps(workdir)}


def terminate(workdir) -> dict:
    target = steps(workdir)[-1] + 1
    proc = launch(workdir)
    wait_for(lambda: steps(workdir)[-1] >= target, proc)
    proc.send_signal(signal.SIGTERM)
    returncode = proc.wait(timeout=300)
    log = (workdir.parent / f"{workdir.name}.log").read_text()
    saved = int(log.rsplit("preempted: saved step ", 1)[1].split(";")[0])
    return {"how": "SIGTERM", "returncode": returncode, "saved": saved, "committed": steps(workdir)}


def test_kill9_resume_is_bitwise_equal_to_uninterrupted_run(straight, interrupted):
    (straight_dir, expected), (workdir, events, resumed) = straight, interrupted
    assert events[0]["left_half_written"], f"seed {SEED}: {events}"  # the first kill hit an async write
    assert_bitwise_equal(resumed, expected)  # params, opt_state, EMAs, step, RNG
    (step_a, _, data_a), (step_b, _, data_b) = restore(straight_dir), restore(workdir)
    assert step_a == step_b == 12 and data_a == data_b  # the same data-iterator position: same data order


def test_sigterm_saves_current_step_and_exits_zero(interrupted):
    _, events, _ = interrupted
    sigterm = events[-1]
    assert sigterm["returncode"] == 0, sigterm
    assert sigterm["committed"][-1] == sigterm["saved"], sigterm  # the step it was on is on disk


def test_truncated_latest_checkpoint_falls_back_and_is_quarantined(straight, interrupted, tmp_path, caplog):
    workdir = tmp_path / "run"
    shutil.copytree(interrupted[0], workdir)
    latest = workdir / runs.CHECKPOINT_DIR / "12"
    for f in (latest / "state").rglob("d/*"):
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with caplog.at_level(logging.WARNING, logger="scm_jax.checkpoint"):
        state = train_and_evaluate(smoke(), str(workdir))  # restores step 11, trains step 12 again
    assert "Checkpoint step 12" in caplog.text and "cannot be restored" in caplog.text, caplog.text
    assert "not deleted" in caplog.text, caplog.text
    (quarantined,) = (workdir / runs.CHECKPOINT_DIR / CORRUPT_SUBDIR).iterdir()
    assert quarantined.name.startswith("12-")
    assert_bitwise_equal(state, straight[1])


def test_checkpoint_of_another_model_names_the_parameter(interrupted, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(interrupted[0], workdir)
    with pytest.raises(ValueError, match=r"Parameter \S+: checkpoint has shape \(\d+(, \d+)*\) float32, "
                                         r"the model expects \(\d+(, \d+)*\) float32"):
        train_and_evaluate(smoke(**{"model.channels": 16}), str(workdir))  # the smoke U-Net has 8
