"""The learning-rate schedule: linear warmup, EDM2's inverse-square-root decay, logged from the schedule itself."""
import numpy as np
import optax
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


def test_logged_rate_is_what_adam_applies():
    """One Adam step from zero moments moves each parameter by lr (sign of the gradient): the logged rate."""
    cfg = _cfg()
    tx = make_optimizer(cfg)
    params = {"w": np.zeros(3, np.float32)}
    state = tx.init(params)
    for step in range(800):  # the schedule's count is the optimizer's own
        state = tx.update({"w": np.zeros(3, np.float32)}, state, params)[1]
    updates, _ = tx.update({"w": np.ones(3, np.float32)}, state, params)
    np.testing.assert_allclose(optax.tree.norm(updates) / np.sqrt(3), learning_rate(cfg, 800), rtol=1e-3)
