"""Configs: every experiment file loads, overrides work, typos and bad combinations are one clear error."""
import subprocess
import sys

import pytest

from configs import embedded
from scm_jax.train.validate import validate_config


@pytest.mark.parametrize("arg", ["diffusion", "sct", "scd", "diffusion,smoke", "sct,smoke", "scd,smoke"])
def test_embedded_configs_load_locked(arg):
    config = embedded.get_config(arg)
    assert config.is_locked
    if "scd" not in arg:
        validate_config(config)


def test_unknown_key_names_near_match():
    config = embedded.get_config("sct")
    with pytest.raises(AttributeError, match='Did you mean "batch_size"'):
        config.train.batchsize = 3


def test_wrong_type_is_refused():
    with pytest.raises(TypeError, match="lr"):
        embedded.get_config("sct").optim.lr = "fast"


@pytest.mark.parametrize("change, match", [
    (lambda c: setattr(c.train, "batch_size", 12), "not divisible by the data-parallel size"),
    (lambda c: setattr(c, "objective", "sctt"), "objective='sctt'"),
    (lambda c: setattr(c.mesh, "rules", "zero"), "mesh.rules"),
    (lambda c: setattr(c.mesh, "data", 3), "uses 3 devices but each of the 1 slice"),
    (lambda c: setattr(c.optim, "cooldown_steps", c.train.steps + 1), "cooldown_steps=1601 is longer than the run"),
])
def test_inconsistent_combinations(change, match):
    config = embedded.get_config("sct")
    change(config)
    with pytest.raises(ValueError, match=match):
        validate_config(config)


def test_scd_without_teacher():
    with pytest.raises(ValueError, match="scm.teacher_workdir"):
        validate_config(embedded.get_config("scd"))


def test_bad_config_arg():
    with pytest.raises(ValueError, match="use one of"):
        embedded.get_config("sctt")


def test_cli_override_typo_fails_before_compute(tmp_path):
    out = subprocess.run([sys.executable, "-m", "scm_jax.cli.train", "--config=configs/embedded.py:sct,smoke",
                          f"--workdir={tmp_path}", "--config.train.stepz=3"], capture_output=True, text=True)
    assert out.returncode != 0 and "stepz" in out.stderr and 'Did you mean "steps"' in out.stderr
    assert not (tmp_path / "checkpoints").exists()
