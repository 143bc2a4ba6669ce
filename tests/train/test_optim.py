"""The learning-rate schedule: linear warmup, EDM2's inverse-square-root decay, a linear cooldown, logged from the
schedule itself."""
import numpy as np
import optax
from ml_collections import ConfigDict

from scm_jax.train.optim import learning_rate, make_optimizer, moved_cooldown, schedule


def _cfg(steps=10_000, **kw) -> ConfigDict:
    """A run config of `steps` steps, as far as the optimizer reads it."""
    optim = dict(name="adam", lr=1e-2, b1=0.9, b2=0.99, eps=1e-8, warmup_steps=100, decay_steps=400, grad_clip=0.0)
    return ConfigDict(dict(optim={**optim, **kw}, train=dict(steps=steps)))


def test_warmup_then_inverse_sqrt_decay():
    lr = schedule(_cfg())
    np.testing.assert_allclose([lr(s) for s in (0, 50, 100, 400, 1600)], [0, 5e-3, 1e-2, 1e-2, 5e-3], rtol=1e-6)
    constant = schedule(_cfg(decay_steps=0))
    np.testing.assert_allclose(constant(10_000), 1e-2, rtol=1e-6)


def test_cooldown_falls_linearly_to_zero_over_the_last_steps():
    lr = schedule(_cfg(steps=1_200, cooldown_steps=200))  # decay 1 / sqrt(step / 400) times the cooldown
    steps = np.array([400, 1_000, 1_100, 1_199, 1_200])
    expected = 1e-2 / np.sqrt(steps / 400) * np.array([1, 1, 0.5, 1 / 200, 0])
    np.testing.assert_allclose([lr(s) for s in steps], expected, rtol=1e-5, atol=1e-9)


def test_logged_rate_is_what_adam_applies():
    """One Adam step from zero moments moves each parameter by lr (sign of the gradient): the logged rate."""
    config = _cfg(steps=1_000, cooldown_steps=500)
    tx = make_optimizer(config)
    params = {"w": np.zeros(3, np.float32)}
    state = tx.init(params)
    for step in range(800):  # the schedule's count is the optimizer's own
        state = tx.update({"w": np.zeros(3, np.float32)}, state, params)[1]
    updates, _ = tx.update({"w": np.ones(3, np.float32)}, state, params)
    np.testing.assert_allclose(optax.tree.norm(updates) / np.sqrt(3), learning_rate(config, 800), rtol=1e-3)


def test_resuming_inside_the_cooldown_to_a_new_length_warns():
    saved = _cfg(steps=1_200, cooldown_steps=200).to_dict()
    longer = _cfg(steps=2_000, cooldown_steps=200)
    warning = moved_cooldown(longer, saved, 1_200)  # a finished run resumed to more steps: lr 0 -> the full rate
    assert "jumps from 0 to 0.00577" in warning and "at or before step 1000" in warning
    assert moved_cooldown(longer, saved, 1_000) is None  # the cooldown had not begun
    assert moved_cooldown(_cfg(steps=1_200, cooldown_steps=200), saved, 1_100) is None  # same length: a plain resume
    assert moved_cooldown(_cfg(steps=2_000, cooldown_steps=0), saved, 1_200) is None  # no cooldown now
