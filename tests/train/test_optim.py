"""The learning-rate schedule: linear warmup, EDM2's inverse-square-root decay, a linear cooldown, logged from the
schedule itself."""
import numpy as np
import optax
import pytest
from ml_collections import ConfigDict

from scm_jax.train.optim import learning_rate, make_optimizer, schedule


def _cfg(**kw) -> ConfigDict:
    return ConfigDict(dict(name="adam", lr=1e-2, b1=0.9, b2=0.99, eps=1e-8, warmup_steps=100, decay_steps=400,
                           grad_clip=0.0, **kw))


def test_warmup_then_inverse_sqrt_decay():
    lr = schedule(_cfg())
    np.testing.assert_allclose([lr(s) for s in (0, 50, 100, 400, 1600)], [0, 5e-3, 1e-2, 1e-2, 5e-3], rtol=1e-6)
    constant = schedule(ConfigDict({**_cfg().to_dict(), "decay_steps": 0}))
    np.testing.assert_allclose(constant(10_000), 1e-2, rtol=1e-6)


def test_cooldown_falls_linearly_to_zero_over_the_last_steps():
    lr = schedule(_cfg(cooldown_steps=200), total_steps=1_200)  # decay 1 / sqrt(step / 400) times the cooldown
    steps = np.array([400, 1_000, 1_100, 1_199, 1_200])
    expected = 1e-2 / np.sqrt(steps / 400) * np.array([1, 1, 0.5, 1 / 200, 0])
    np.testing.assert_allclose([lr(s) for s in steps], expected, rtol=1e-5, atol=1e-9)
    with pytest.raises(ValueError, match="cooldown_steps=200 needs"):
        schedule(_cfg(cooldown_steps=200), total_steps=100)


def test_logged_rate_is_what_adam_applies():
    """One Adam step from zero moments moves each parameter by lr (sign of the gradient): the logged rate."""
    cfg = _cfg(cooldown_steps=500)
    tx = make_optimizer(cfg, total_steps=1_000)
    params = {"w": np.zeros(3, np.float32)}
    state = tx.init(params)
    for step in range(800):  # the schedule's count is the optimizer's own
        state = tx.update({"w": np.zeros(3, np.float32)}, state, params)[1]
    updates, _ = tx.update({"w": np.ones(3, np.float32)}, state, params)
    np.testing.assert_allclose(optax.tree.norm(updates) / np.sqrt(3), learning_rate(cfg, 800, 1_000), rtol=1e-3)
