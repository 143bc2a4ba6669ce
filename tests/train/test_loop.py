"""Real training runs of every objective on the embedded data (tiny DiT, a few steps, 8 fake devices)."""
import json
import os

import jax
import numpy as np
import pytest

from configs import embedded
from scm_jax.train import runs
from scm_jax.train.loop import train_and_evaluate


def smoke(objective: str, **overrides):
    config = embedded.get_config(f"{objective},smoke")
    with config.unlocked():
        for key, value in overrides.items():
            node = config
            *path, leaf = key.split(".")
            for p in path:
                node = node[p]
            node[leaf] = value
    return config


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("teacher"))
    train_and_evaluate(smoke("diffusion", **{"train.steps": 40, "train.log_every": 10, "sample.every_steps": 40}),
                       workdir)
    return workdir


def test_diffusion_run_writes_checkpoint_config_samples_and_loss_falls(teacher):
    assert os.path.exists(os.path.join(teacher, runs.CONFIG_FILE))
    assert os.listdir(os.path.join(teacher, "samples")) == ["heun_nfe35_0000040.png"]
    assert 40 in runs.checkpointer(runs.read_config(teacher), teacher).all_steps()
    losses = scalars(teacher, "loss")
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.parametrize("objective", ["sct", "scd"])
def test_consistency_objectives_train(objective, teacher, tmp_path):
    config = smoke(objective, **{"scm.teacher_workdir": teacher})
    state = train_and_evaluate(config, str(tmp_path))
    assert int(state["step"]) == config.train.steps
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(state["params"]))
    assert sorted(os.listdir(tmp_path / "samples")) == ["1step_0000006.png", "2step_0000006.png"]


def test_resume_equals_uninterrupted_run(tmp_path):
    straight = train_and_evaluate(smoke("sct", **{"train.steps": 6}), str(tmp_path / "a"))
    train_and_evaluate(smoke("sct", **{"train.steps": 3}), str(tmp_path / "b"))
    resumed = train_and_evaluate(smoke("sct", **{"train.steps": 6}), str(tmp_path / "b"))
    for a, b in zip(jax.tree.leaves(straight), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def scalars(workdir: str, tag: str) -> list[float]:
    with open(os.path.join(workdir, "metrics.jsonl")) as fh:
        return [json.loads(line)[tag] for line in fh]
