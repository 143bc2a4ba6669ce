"""EMA with EDM's ramp-up: never dominated by the initialisation, the configured half-life once past the ramp."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import embedded
from scm_jax.parallel.mesh import make_mesh
from scm_jax.train import ema
from scm_jax.train.optim import make_optimizer
from scm_jax.train.state import make_setup, sharded_init
from scm_jax.train.step import make_train_step
from tests.fakes import train_on_random_batches


def test_ema_of_a_constant_trajectory_is_that_constant_from_step_1():
    init, theta = {"w": jnp.zeros(3)}, {"w": jnp.full(3, 2.0)}
    emas = {"ema_0.5": init}
    for step in range(3):
        emas = ema.update_emas(emas, theta, {"ema_0.5": ema.ema_decay(0.5, 64, step, rampup_ratio=0.05)})
        np.testing.assert_array_equal(emas["ema_0.5"]["w"], theta["w"])


def test_ramp_caps_the_half_life_then_reaches_the_configured_one():
    """h = min(half-life, 0.05 x images seen): at 1,000 steps x 64 images, 3,200 images; the 0.02 Mimg half-life
    from 6,250 steps on. Without the ramp-up, the init keeps 2^-(images / half-life) of the EMA."""
    decay = lambda step: float(ema.ema_decay(0.02, 64, step, rampup_ratio=0.05))
    np.testing.assert_allclose(decay(1000), 0.5 ** (64 / 3200), rtol=1e-6)
    np.testing.assert_allclose(decay(10_000), 0.5 ** (64 / 20_000), rtol=1e-6)
    assert ema.ema_decay(0.02, 64) == pytest.approx(0.5 ** (64 / 20_000))
    weight_of_init = np.prod([decay(s) for s in range(400)])
    assert weight_of_init == 0.0  # the fixed decay would keep 0.5^(400 * 64 / 20,000) = 41%


def test_train_step_ema_tracks_the_parameters_from_the_first_step():
    """Through the real jitted step: with a zero learning rate the parameters stay constant and every EMA equals
    them after step 1."""
    config = embedded.get_config("diffusion,smoke")
    with config.unlocked():
        config.optim.update(lr=0.0, warmup_steps=0)
    setup = make_setup(config, make_mesh(-1, 1, 1), make_optimizer(config))
    state = sharded_init(setup, jax.random.key(0))
    state = train_on_random_batches(make_train_step(setup, config), state, 1)
    for e, p in zip(jax.tree.leaves(state["ema"]), jax.tree.leaves(state["params"])):
        np.testing.assert_array_equal(np.asarray(e), np.asarray(p))
