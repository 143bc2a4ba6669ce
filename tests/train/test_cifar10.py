"""The CIFAR-10 config: paper hyper-parameters, and its smoke variant trains on a tfds-layout CIFAR-10 copy."""
import pytest

from configs import cifar10
from scm_jax.train.loop import train_and_evaluate
from scm_jax.train.validate import validate_config
from tests.fakes import write_fake_cifar10


@pytest.mark.parametrize("arg", ["diffusion", "sct", "scd", "sct,smoke"])
def test_configs_load_locked_with_paper_values(arg):
    config = cifar10.get_config(arg)
    assert config.is_locked and config.data.name == "cifar10" and config.data.channels == 3
    assert (config.optim.name, config.optim.lr, config.diffusion.P_mean, config.diffusion.P_std) == \
        ("radam", 1e-4, -1.0, 1.4)
    if "smoke" not in arg:
        assert (config.train.batch_size, config.model.dropout, config.train.ema_half_lives_mimg) == (512, 0.2, (0.5,))


def test_smoke_trains_on_tfds_cifar10(tmp_path):
    write_fake_cifar10(str(tmp_path / "data"), count=32)
    config = cifar10.get_config("diffusion,smoke")
    with config.unlocked():
        config.data.data_dir = str(tmp_path / "data")
    validate_config(config)
    state = train_and_evaluate(config, str(tmp_path / "run"))
    assert int(state["step"]) == config.train.steps
    assert (tmp_path / "run" / "checkpoints").exists()
