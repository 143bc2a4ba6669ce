"""Gradient accumulation: microbatches scanned inside the jitted step give the whole batch's gradient."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import embedded
from scm_jax.models.registry import model_apply
from scm_jax.parallel.mesh import make_mesh
from scm_jax.train import step as step_lib
from scm_jax.train.optim import make_optimizer
from scm_jax.train.state import make_setup, sharded_init
from tests.fakes import train_on_random_batches


def config_with(**train_and_model):
    config = embedded.get_config("sct,smoke")
    with config.unlocked():
        config.train.grad_accum_steps = train_and_model.get("grad_accum_steps", 1)
        config.model.remat = train_and_model.get("remat", "none")
        config.model.dropout = 0.0
    return config


def deterministic_objective(opts, graphdef, teacher_fn, critic=None):
    """A per-sample mean loss of the real DiT with no randomness, so microbatch keys cannot matter."""
    def loss(params, batch, key, step):
        x0 = batch["x0"]
        t = 0.3 + jnp.mean(x0, axis=(1, 2, 3)) ** 2  # a per-sample time
        F, w_phi = model_apply(graphdef, params)(x0 / 0.5, t, batch["label"])
        value = jnp.mean(jnp.square(F - x0)) + 0.1 * jnp.mean(w_phi**2)
        return value, {"loss": value}
    return loss


def one_step(config, monkeypatch, batch):
    monkeypatch.setattr(step_lib, "make_objective", deterministic_objective)
    setup = make_setup(config, make_mesh(-1, 1, 1), make_optimizer(config))
    state = sharded_init(setup, jax.random.key(0))
    noise = jax.random.split(jax.random.key(1), len(jax.tree.leaves(state["params"])))
    leaves, treedef = jax.tree.flatten(state["params"])  # away from the zero init, so every gradient is non-zero
    state["params"] = jax.tree.unflatten(treedef, [p + 0.05 * jax.random.normal(k, p.shape) for p, k in
                                                   zip(leaves, noise)])
    return step_lib.make_train_step(setup, config)(state, batch)


def test_accumulated_gradient_equals_whole_batch_gradient(monkeypatch):
    """2 microbatches with per-block remat vs the whole batch without: the same loss, gradient norm and Adam
    moments (mu = (1 - b1) g after one step) to float32 tolerance."""
    rng = np.random.default_rng(0)
    batch = {"image": rng.uniform(-1, 1, (16, 32, 32, 1)).astype(np.float32),
             "label": rng.integers(0, 10, 16).astype(np.int32)}
    whole, m_whole = one_step(config_with(grad_accum_steps=1), monkeypatch, batch)
    accum, m_accum = one_step(config_with(grad_accum_steps=2, remat="dots"), monkeypatch, batch)
    np.testing.assert_allclose(m_accum["loss"], m_whole["loss"], rtol=1e-5)
    np.testing.assert_allclose(m_accum["grad_norm"], m_whole["grad_norm"], rtol=1e-5)
    assert float(m_whole["grad_norm"]) > 0
    for a, b in zip(jax.tree.leaves(accum["opt_state"]), jax.tree.leaves(whole["opt_state"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-9)


def test_real_objective_trains_with_accumulation():
    config = config_with(grad_accum_steps=2)
    setup = make_setup(config, make_mesh(-1, 1, 1), make_optimizer(config))
    state = sharded_init(setup, jax.random.key(0))
    train_step = step_lib.make_train_step(setup, config)
    state = train_on_random_batches(train_step, state, 2)
    assert int(state["step"]) == 2
    assert train_step._cache_size() == 1


@pytest.mark.parametrize("batch_size, accum", [(16, 3), (16, 4), (16, 0)])
def test_bad_accumulation_names_the_fix(batch_size, accum):
    with pytest.raises(ValueError, match="grad_accum_steps"):
        step_lib.check_grad_accum(batch_size, accum, make_mesh(-1, 1, 1))  # 16 / 4 = 4 rows < 8 devices
