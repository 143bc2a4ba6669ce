"""Every CM baseline trains a few steps through the real jitted train step on 8 fake devices (smoke configs)."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import embedded
from scm_jax.eval.periodic import default_methods
from scm_jax.samplers import generate
from scm_jax.parallel.mesh import make_mesh
from scm_jax.train.optim import make_optimizer
from scm_jax.train.state import make_setup, sharded_init
from scm_jax.models.registry import model_apply
from scm_jax.train.step import make_train_step


# ~40-100 s each on 2 contended cores (mostly compilation): ct (EMA target in the state) runs by default.
@pytest.mark.parametrize("objective", [pytest.param("cd", marks=pytest.mark.slow), "ct",
                                       pytest.param("ict", marks=pytest.mark.slow),
                                       pytest.param("ect", marks=pytest.mark.slow)])
def test_objective_trains_on_8_devices(objective):
    config = embedded.get_config(f"{objective},smoke")
    assert jax.device_count() == 8
    setup = make_setup(config, make_mesh(), make_optimizer(config))
    state = sharded_init(setup, jax.random.key(0))
    assert ("target" in state) == (objective in ("cd", "ct"))
    teacher_params = jax.tree.map(jnp.copy, state["params"])  # any network serves as CD's teacher here
    apply = model_apply(setup.graphdef, teacher_params)
    teacher_fn = (lambda x, t, labels=None: apply(x, t, labels)[0]) if objective == "cd" else None
    step = make_train_step(setup, config, teacher_fn)
    d, B = config.data, config.train.batch_size
    batch = {"image": jax.random.uniform(jax.random.key(1), (B, d.image_size, d.image_size, d.channels),
                                         minval=-1, maxval=1),
             "label": jnp.arange(B, dtype=jnp.int32) % d.num_classes}
    for _ in range(3):
        state, metrics = step(state, batch)
    assert int(state["step"]) == 3 and bool(metrics["finite"]) and np.isfinite(float(metrics["loss"]))
    moved = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), state["params"],
                                         teacher_params))
    assert max(moved) > 0
    if "target" in state:  # theta^- moved towards theta, at rate mu(k) < 1
        assert 0.0 < float(metrics["mu"]) < 1.0
        gap = jax.tree.leaves(jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), state["target"],
                                           teacher_params))
        assert 0 < max(gap) < max(moved)


def test_scm_sample_methods_of_cm_runs_use_cm_algorithm_1():
    config = embedded.get_config("ict,smoke")
    methods = default_methods(embedded.get_config("ect,smoke"))
    assert [m.edm.eps for m in methods] == [0.0, 0.0] and default_methods(config)[0].edm.eps == 0.002
    assert default_methods(embedded.get_config("sct,smoke"))[0].edm is None
    setup = make_setup(config, make_mesh(), make_optimizer(config))
    params = sharded_init(setup, jax.random.key(0))["params"]
    shape = (8, config.data.image_size, config.data.image_size, config.data.channels)
    x = jax.jit(generate.sampler(model_apply(setup.graphdef, params), methods[1], shape))(
        jax.random.key(0), jnp.arange(8) % 10, None)
    assert x.shape == shape and bool(jnp.all(jnp.isfinite(x)))


@pytest.mark.slow
def test_ct_run_through_the_loop_writes_cm_samples_and_resumes(tmp_path):
    """The whole trainer on a CM run: the EMA target is checkpointed and resumed, grids come from CM Alg. 1.
    (Not bitwise against `straight`: K of N(k) is train.steps, which the interrupted run changes.)"""
    from scm_jax.train.loop import train_and_evaluate
    config = embedded.get_config("ct,smoke")
    straight = train_and_evaluate(config, str(tmp_path / "a"))
    with config.unlocked():
        config.train.steps = 3
    train_and_evaluate(config, str(tmp_path / "b"))
    with config.unlocked():
        config.train.steps = 6
    resumed = train_and_evaluate(config, str(tmp_path / "b"))
    assert int(resumed["step"]) == 6 and jax.tree.structure(resumed) == jax.tree.structure(straight)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(resumed["target"]))
    assert sorted(p.name for p in (tmp_path / "a" / "samples").iterdir()) == ["1step_0000006.png", "2step_0000006.png"]
