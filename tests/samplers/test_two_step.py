"""2-step sampling, wherever a run is sampled "with 2 steps" (scm-sample, scm_jax.load(...).sample, training grids,
periodic eval), re-noises at the run's config.sample.t_mid (configs/embedded.py: 1.3; sCM's 1.1 otherwise)."""
import scm_jax
from configs import embedded
from scm_jax.eval import periodic
from scm_jax.formulations.trigflow import T_MAX
from scm_jax.samplers import consistency
from tests.test_inference import make_run


def test_two_steps_sample_at_the_runs_t_mid(tmp_path):
    model = scm_jax.load(make_run(str(tmp_path), **{"sample.t_mid": 1.25}))
    assert model.options(4, steps=2).method.times == (T_MAX, 1.25)
    assert [m.times for m in periodic.default_methods(model.config)] == [(T_MAX,), (T_MAX, 1.25)]


def test_embedded_students_and_runs_saved_before_the_key():
    assert embedded.get_config("scd").sample.t_mid == 1.3
    config = embedded.get_config("ct")
    assert config.sample.t_mid == consistency.T_MID == 1.1
    with config.unlocked():
        del config.sample["t_mid"]  # a config.json written before sample.t_mid existed
    assert periodic.t_mid(config) == consistency.T_MID
