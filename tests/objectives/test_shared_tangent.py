"""The shared student/tangent pass (scm.tangent_attention="same"): one jax.jvp of the student gives F_theta with
its gradient, F^- = sg(F_theta) and the tangent. Its loss and gradient equal the two-pass form (a separate F^-
pass at sg(params) with the same kernel) for sCT, sCD and phased sCM, with reference and blockwise attention.
"""
import jax
import numpy as np
import pytest

from configs import embedded
from scm_jax.train.state import make_setup, sharded_init
from scm_jax.parallel.mesh import make_mesh
from scm_jax.train.optim import make_optimizer
from scm_jax.models.registry import model_apply
from scm_jax.train.step import make_objective, step_options
from scm_jax.train.validate import validate_config


def perturbed(params):
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(3), len(leaves))
    return treedef.unflatten([p + 0.05 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys)])


def loss_and_grad(objective: str, attention: str, tangent_attention: str):
    config = embedded.get_config(f"{objective},smoke")
    with config.unlocked():
        config.model.attention = attention
        config.scm.update(tangent_attention=tangent_attention, warmup_steps=0)  # r = 1: the full JVP term
        config.pcm.distill = True
    setup = make_setup(config, make_mesh(-1, 1, 1), make_optimizer(config))
    params = perturbed(sharded_init(setup, jax.random.key(0))["params"])  # DiT's zero-init output: F = 0
    # The teacher is a diffusion network (no guidance input, unlike the guided sCD student)
    t_config = embedded.get_config("diffusion,smoke")
    t_setup = make_setup(t_config, setup.mesh, make_optimizer(t_config))
    teacher_params = sharded_init(t_setup, jax.random.key(1))["params"]
    teacher = lambda x, t, labels=None: model_apply(t_setup.graphdef, teacher_params)(x, t, labels)[0]
    loss = make_objective(step_options(config, setup.mesh), setup.graphdef, teacher)
    rng = np.random.default_rng(0)
    batch = {"x0": rng.uniform(-1, 1, (8, 32, 32, 1)).astype(np.float32),
             "label": rng.integers(0, 10, 8).astype(np.int32)}
    return jax.jit(jax.value_and_grad(loss, has_aux=True))(params, batch, jax.random.key(2), 5)


@pytest.mark.parametrize("objective,attention", [("sct", "reference"), ("scd", "reference"),
                                                 ("pscm", "reference"), ("sct", "blockwise")])
def test_shared_pass_equals_two_passes(objective, attention):
    (loss_1, m_1), grads_1 = loss_and_grad(objective, attention, "same")
    (loss_2, m_2), grads_2 = loss_and_grad(objective, attention, attention)
    np.testing.assert_allclose(loss_1, loss_2, rtol=1e-5)
    np.testing.assert_allclose(m_1["jvp_rms"], m_2["jvp_rms"], rtol=1e-5)
    assert float(m_1["jvp_rms"]) > 0
    scale = max(float(np.max(np.abs(g))) for g in jax.tree.leaves(grads_2))
    for a, b in zip(jax.tree.leaves(grads_1), jax.tree.leaves(grads_2)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("updates,message", [
    (dict(tangent_attention="flash"), "scm.tangent_attention='flash'"),
    (dict(tangent_attention="cudnn"), "cannot be forward-differentiated"),
])
def test_tangent_attention_errors(updates, message):
    config = embedded.get_config("sct,smoke")
    with config.unlocked():
        config.scm.update(**updates)
    with pytest.raises(ValueError, match=message):
        validate_config(config)


def test_same_kernel_cudnn_needs_blockwise_tangent():
    config = embedded.get_config("sct,smoke")
    with config.unlocked():
        config.model.update(attention="cudnn", dtype="bfloat16")
    with pytest.raises(ValueError, match="tangent_attention=blockwise"):
        validate_config(config)
