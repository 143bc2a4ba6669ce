"""PCM (discrete, adversarial) and continuous-time phased sCM: edges, boundary, Gaussian oracles, tangent, sampler."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from configs import embedded
from scm_jax.checkpoint import Checkpointer
from scm_jax.formulations import phases, trigflow
from scm_jax.models.discriminator import Discriminator
from scm_jax.models.registry import model_apply
from scm_jax.objectives import pcm, registry, scm
from scm_jax.parallel.mesh import make_mesh
from scm_jax.samplers import generate, phased
from scm_jax.train import step as step_lib
from scm_jax.train.optim import make_optimizer
from scm_jax.train.state import make_setup, sharded_init
from scm_jax.train.validate import validate_config
from tests.oracles import F_cons, F_vel, R, assert_gradient_identity
from tests.fakes import tiny_mlp, train_on_random_batches

S = 0.8  # data std of the Gaussian oracle
SD = trigflow.SIGMA_D
EDGES = phases.uniform_edges(4)


def F_pcons(s_data, edges):
    """Exact phased consistency function f_m = R(s_m) / R(t) x_t: F = (cos u - R(s_m) / R(t)) x_t / (sigma_d sin u)."""
    def apply(x_in, t, labels=None, guidance=None, dropout_key=None):
        x, tb = SD * x_in, trigflow.bcast(t, x_in)
        s = trigflow.bcast(phases.lower_edge(t, edges), x_in)
        u = tb - s
        safe = jnp.where(u > 0, u, 1.0)  # u = 0 only at t = s_0 = 0, where f = x for any F
        F = jnp.where(u > 0, (jnp.cos(u) - R(s, s_data) / R(tb, s_data)) * x / (SD * jnp.sin(safe)), 0.0)
        return F, jnp.zeros(t.shape)
    return apply


def gaussian_batch(n=4096, d=8, seed=0):
    return {"x0": S * jax.random.normal(jax.random.key(seed), (n, d))}


def teacher(apply):
    return lambda x, t, labels=None: apply(x, t, labels)[0]


# --- phases and the boundary condition ---

@pytest.mark.parametrize("edges, match", [((0.0,), "M >= 1"), ((0.0, 1.0, 0.5), "strictly increasing"),
                                          ((0.1, 1.0), "s_0 = 0"), ((0.0, 2.0), "pi/2"), ((0.0, 0.5, 0.5), "strictly")])
def test_bad_edges_raise(edges, match):
    with pytest.raises(ValueError, match=match):
        phases.check_edges(edges)
    with pytest.raises(ValueError, match=match):
        pcm.PSCMOptions(edges=edges)


@pytest.mark.parametrize("kwargs, match", [({"substeps": 0}, "substeps"), ({"solver": "rk4"}, "solver"),
                                           ({"huber_c": -1.0}, "huber_c"), ({"edges": ()}, "M >= 1")])
def test_bad_pcm_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        pcm.PCMOptions(**kwargs)


def test_uniform_edges():
    with pytest.raises(ValueError, match="M >= 1"):
        phases.uniform_edges(0)
    e = phases.uniform_edges(3)
    assert len(e) == 4 and e[0] == 0.0 and e[-1] == pytest.approx(trigflow.T_MAX)


def test_lower_edge_is_the_phase_start():
    e = np.asarray(EDGES, np.float32)
    t = jnp.asarray([0.0, 1e-4, e[1], e[1] + 1e-4, e[2] - 1e-4, e[4], 1.57], jnp.float32)
    np.testing.assert_array_equal(phases.lower_edge(t, EDGES), e[[0, 0, 0, 1, 1, 3, 3]])


def test_phased_f_is_identity_at_the_phase_edge_for_any_network():
    x = jax.random.normal(jax.random.key(0), (6, 3))
    F = 100.0 * jax.random.normal(jax.random.key(1), (6, 3))
    s = jnp.asarray(EDGES[:-1] + EDGES[1:3], jnp.float32)[:6]
    np.testing.assert_array_equal(trigflow.ddim_step(x, s, s, F), x)  # f_m(x, s_m) = x
    near = pcm.phased_f(x, s + 1e-6, F, EDGES)  # continuous as t -> s_m+
    np.testing.assert_allclose(near, x, atol=1e-3)
    np.testing.assert_array_equal(pcm.phased_f(x, jnp.zeros(6), F, EDGES), x)  # f(x, 0) = x


def test_single_phase_is_scm_consistency_function():
    x, F, t = jnp.ones((3, 2)), jnp.full((3, 2), 0.3), jnp.asarray([0.2, 0.9, 1.5])
    np.testing.assert_allclose(pcm.phased_f(x, t, F, phases.uniform_edges(1)), trigflow.f_from_F(x, t, F), atol=1e-6)


# --- continuous-time phased sCM ---

def test_pscm_tangent_is_zero_for_exact_phased_consistency_function():
    base = dict(distill=True, warmup_steps=0, tangent_norm="none", adaptive_weight=False)
    opts = pcm.PSCMOptions(edges=EDGES, scm=scm.SCMOptions(**base))
    run = lambda F: pcm.pscm_loss(F, F, gaussian_batch(1024, 4), jax.random.key(1), jnp.array(0), opts,
                                  teacher_fn=teacher(F_vel(S)))
    loss, m = run(F_pcons(S, EDGES))
    _, m_scm = run(F_cons(S))  # sCM's consistency function is not consistent towards the edges: large g
    assert float(m_scm["g_rms"]) > 0.05
    assert float(m["g_rms"]) < 2e-5 * float(m_scm["g_rms"]) + 1e-6
    assert float(loss) < 1e-9


def test_phased_tangent_matches_float64_finite_difference_of_f_m():
    """g = cos(u) df_m/dt along dxt_dt, u = t - s_m: the JVP form against a central difference of f_m itself."""
    with jax.enable_x64(True):
        apply, params = tiny_mlp(x64=True)
        F_fn = lambda x, tt: apply(params)(x, tt)[0]
        t = jnp.asarray([0.05, 0.45, 0.8, 1.2, 1.5], jnp.float64)
        s = phases.lower_edge(t, EDGES).astype(jnp.float64)
        xt = jax.random.normal(jax.random.key(0), (5, 4), jnp.float64)
        dxt_dt = jax.random.normal(jax.random.key(1), (5, 4), jnp.float64)

        @jax.jit
        def g_and_fd():
            F_minus, jvp_out = scm.tangent_F(F_fn, xt / SD, t, dxt_dt, scm.SCMOptions(), u=t - s)
            g = scm.scm_g(xt, t - s, F_minus, dxt_dt, jvp_out, 1.0, SD)
            f_m = lambda h: trigflow.ddim_step(xt + h * dxt_dt, t + h, s, F_fn((xt + h * dxt_dt) / SD, t + h), SD)
            h = 1e-6
            return g, trigflow.bcast(jnp.cos(t - s), xt) * (f_m(h) - f_m(-h)) / (2 * h)
        g, fd = g_and_fd()
        np.testing.assert_allclose(np.asarray(g), np.asarray(fd), rtol=1e-5, atol=1e-8)


@pytest.mark.slow
def test_phased_gradient_identity_discrete_loss():
    """grad ||f_m(x_t, t) - sg f_m(x_t - dt dxt_dt, t - dt)||^2 / dt -> sigma_d tan(t - s_m) grad ||F - sg F - g||^2."""
    with jax.enable_x64(True):
        apply, params = tiny_mlp(dim=3, x64=True)
        s = float(phases.lower_edge(jnp.asarray([1.0]), EDGES)[0])
        assert s > 0
        assert_gradient_identity(apply, params, t=1.0, s=s)


# --- discrete PCM ---

def oracle_pcm_loss(solver, K, student=None):
    opts = pcm.PCMOptions(edges=EDGES, substeps=K, solver=solver)
    F = student or F_pcons(S, EDGES)
    return float(pcm.pcm_loss(F, F, gaussian_batch(2048, 4), jax.random.key(2), jnp.array(0), opts,
                              teacher_fn=teacher(F_vel(S)))[0])


def test_pcm_oracle_loss_vanishes_at_the_teacher_solver_order():
    """With the exact f_m only the teacher step's local error remains: the squared loss falls as h^4 for DDIM
    (local error O(h^2)) and at least as h^6 for Heun (O(h^3)); a function consistent towards other edges keeps
    an O(h^2) loss."""
    ddim = {K: oracle_pcm_loss("ddim", K) for K in (8, 16)}
    heun = {K: oracle_pcm_loss("heun", K) for K in (16, 32)}
    wrong = oracle_pcm_loss("ddim", 16, student=F_pcons(S, phases.uniform_edges(2)))
    assert 12 < ddim[8] / ddim[16] < 20, ddim
    assert heun[16] / heun[32] > 50 and heun[32] < ddim[16] / 64, (heun, ddim)
    assert ddim[16] < 0.02 * wrong, (ddim, wrong)


def test_pcm_consistency_training_is_distillation_with_the_conditional_velocity():
    """distill=False takes x_t' = cos t' x0 + sin t' z with the z of x_t: the DDIM step of v = cos t z - sin t x0."""
    batch = gaussian_batch(64, 4)
    x0 = batch["x0"]

    def conditional_velocity(x_in, t, labels=None):  # F = v / sigma_d, z recovered from x_t and the batch's x0
        tb = trigflow.bcast(t, x0)
        z = (SD * x_in - jnp.cos(tb) * x0) / jnp.sin(tb)
        return (jnp.cos(tb) * z - jnp.sin(tb) * x0) / SD

    def loss(distill, teacher_fn=None):
        opts = pcm.PCMOptions(edges=EDGES, scm=scm.SCMOptions(distill=distill))
        F = F_pcons(0.3, EDGES)  # any student
        return float(pcm.pcm_loss(F, F, batch, jax.random.key(2), jnp.array(0), opts, teacher_fn)[0])

    assert loss(False) == pytest.approx(loss(True, conditional_velocity), rel=1e-4)
    with pytest.raises(ValueError, match="teacher_fn"):
        loss(True)


def test_pcm_guided_teacher_scale_is_fed_to_student():
    seen = {}

    def student(x_in, t, labels, guidance, dropout_key=None):
        seen["guidance"] = guidance
        return jnp.zeros_like(x_in), jnp.zeros(t.shape)

    cond_teacher = lambda x, t, labels: x * (labels[:, None] == 10)
    batch = {"x0": jnp.ones((64, 2)), "label": jnp.arange(64) % 10}
    opts = pcm.PCMOptions(solver="heun", scm=scm.SCMOptions(distill=True, guidance=(1.0, 2.0), num_classes=10))
    loss, _ = pcm.pcm_loss(student, student, batch, jax.random.key(0), jnp.array(0), opts, teacher_fn=cond_teacher)
    s = seen["guidance"]
    assert np.isfinite(float(loss)) and s.shape == (64,) and 1.0 <= float(s.min()) <= float(s.max()) <= 2.0


def test_pseudo_huber_distance():
    pred, target = jnp.full((2, 4), 3.0), jnp.zeros((2, 4))
    np.testing.assert_allclose(pcm.pcm_distance(pred, target, 0.0), 9.0)
    np.testing.assert_allclose(pcm.pcm_distance(pred, target, 4.0), 1.0)  # sqrt(9 + 16) - 4


def test_renoise_matches_the_forward_process_marginal():
    x0 = S * jax.random.normal(jax.random.key(0), (50_000, 1))
    z = SD * jax.random.normal(jax.random.key(1), x0.shape)
    s, tau = jnp.full((50_000,), 0.4), jnp.full((50_000,), 1.1)
    x_tau = pcm.renoise(trigflow.x_t(x0, z, s), s, tau, jax.random.normal(jax.random.key(2), x0.shape), SD)
    assert float(jnp.std(x_tau)) == pytest.approx(float(R(1.1, S)), rel=0.02)
    np.testing.assert_allclose(np.corrcoef(x0[:, 0], x_tau[:, 0])[0, 1] * float(R(1.1, S)), np.cos(1.1) * S, rtol=0.03)


# --- adversarial option ---

def adversarial_setup(adv_weight: float = 0.1):
    graphdef, d_params = nnx.split(Discriminator(4, width=32, rngs=nnx.Rngs(0)))
    make_disc = lambda p: (lambda x, t, labels=None: nnx.merge(graphdef, p)(x, t, labels))
    opts = pcm.PCMOptions(edges=EDGES, substeps=1, adv_weight=adv_weight)  # K = 1: the target is x^_{s_m}
    return make_disc, d_params, opts


def test_adversarial_pcm_needs_a_critic():
    with pytest.raises(ValueError, match="disc_fn"):
        apply, params = tiny_mlp()
        pcm.pcm_loss(apply(params), apply(params), gaussian_batch(8, 4), jax.random.key(0), jnp.array(0),
                     pcm.PCMOptions(adv_weight=0.1, scm=scm.SCMOptions(distill=False)))


def test_discriminator_learns_with_its_own_optimizer_and_adds_a_generator_gradient():
    """A student with a constant F (a mean shift of f_m) against the exact teacher's step: the critic separates them."""
    make_disc, d_params, opts = adversarial_setup()
    shifted = lambda x_in, t, *a, **k: (2.0 * jnp.ones_like(x_in), jnp.zeros(t.shape))
    batch, F_teacher = gaussian_batch(256, 4), teacher(F_vel(S))
    tx = optax.adam(1e-2)
    d_opt_state = tx.init(d_params)
    step = jax.jit(lambda dp, ds, k: pcm.discriminator_step(make_disc, dp, ds, tx, shifted, batch, k, opts,
                                                            F_teacher))
    d_losses = []
    for i in range(30):
        d_params, d_opt_state, m = step(d_params, d_opt_state, jax.random.key(i))
        d_losses.append(float(m["d_loss"]))
    assert d_losses[0] == pytest.approx(2.0, abs=0.3) and np.mean(d_losses[-5:]) < 0.8 * d_losses[0], d_losses
    assert int(d_opt_state[0].count) == 30  # its own optimizer state

    apply, params = tiny_mlp()

    @jax.jit
    def g_loss_and_grad(p):
        run = lambda p, o, disc: pcm.pcm_loss(apply(p), apply(jax.lax.stop_gradient(p)), batch, jax.random.key(0),
                                              jnp.array(0), o, F_teacher, disc)
        with_adv = jax.value_and_grad(run, has_aux=True)(p, opts, make_disc(d_params))
        without = jax.value_and_grad(run, has_aux=True)(p, pcm.PCMOptions(edges=EDGES, substeps=1), None)
        return with_adv, without
    ((loss, m), grads), ((loss0, _), grads0) = g_loss_and_grad(params)
    assert float(loss) == pytest.approx(float(loss0) + 0.1 * float(m["g_adv"]), rel=1e-5)
    assert optax.tree.norm(jax.tree.map(jnp.subtract, grads, grads0)) > 1e-6


def counting(apply, calls):
    def wrapped(x_in, t, labels=None, guidance=None, dropout_key=None):
        calls.append(float(t[0]))
        return apply(x_in, t, labels, guidance)
    return wrapped


@pytest.mark.parametrize("M", [1, 4])
def test_phased_sampler_uses_M_calls_and_the_exact_f_m_gives_the_data(M):
    edges, calls = phases.uniform_edges(M), []
    x = phased.phased_sample(counting(F_pcons(S, edges), calls), jax.random.key(0), (20_000, 2), edges)
    np.testing.assert_allclose(calls, np.asarray(edges[:0:-1], np.float32))  # t_max, ..., s_1: one call each
    assert float(jnp.std(x)) == pytest.approx(S, rel=0.02)


def test_phased_sampler_is_deterministic_and_registered():
    method = generate.Method(edges=EDGES)
    assert method.nfe == 4 and method.name == "phased4"
    sample = jax.jit(generate.sampler(F_pcons(S, EDGES), method, (8, 4)))
    np.testing.assert_array_equal(sample(jax.random.key(3), None, None), sample(jax.random.key(3), None, None))
    assert not np.allclose(sample(jax.random.key(3), None, None), sample(jax.random.key(4), None, None))
    with pytest.raises(ValueError, match="strictly increasing"):
        generate.Method(edges=(0.0, 1.0, 0.5))


# --- the trainer ---

@pytest.mark.parametrize("objective", ["pcm", "pscm"])
def test_phased_objectives_train_through_the_real_train_step(objective):
    """A few distillation steps of a tiny DiT on 8 fake devices (the teacher: another random DiT)."""
    config = embedded.get_config(f"{objective},smoke")
    setup = make_setup(config, make_mesh(), make_optimizer(config))
    assert jax.device_count() == 8 and registry.phase_edges(config) == phases.uniform_edges(config.pcm.phases)
    state = sharded_init(setup, jax.random.key(0))
    t_apply = model_apply(setup.graphdef, sharded_init(setup, jax.random.key(1))["params"])
    train_step = step_lib.make_train_step(setup, config, lambda x, t, labels=None: t_apply(x, t, labels)[0])
    before = jax.tree.map(np.asarray, state["params"])
    state = train_on_random_batches(train_step, state, 2)
    assert int(state["step"]) == 2
    assert any(not np.allclose(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state["params"])))


def test_phased_config_errors():
    config = embedded.get_config("pcm,smoke")
    with pytest.raises(ValueError, match="teacher_workdir"):
        validate_config(config)
    with config.unlocked():
        config.pcm.distill = False
        validate_config(config)
        config.pcm.edges = (0.0, 1.0, 0.5)
        with pytest.raises(ValueError, match="strictly increasing"):
            registry.phase_edges(config)
        config.update(objective="pscm")
        config.pcm.update(edges=(), adv_weight=0.1)
        with pytest.raises(ValueError, match="pcm.adv_weight=0.1 is PCM's adversarial loss"):
            validate_config(config)
    assert generate.methods_for("phased", edges=EDGES) == [generate.Method(edges=EDGES)]


def test_adversarial_pcm_trains_its_critic_in_the_train_state_and_checkpoint(tmp_path):
    """pcm.adv_weight > 0: the critic's parameters and Adam state live in the sharded train state, both networks
    update every step, and the critic survives a checkpoint round trip."""
    config = embedded.get_config("pcm,smoke")
    with config.unlocked():
        config.pcm.update(distill=False, adv_weight=0.1)
        config.pcm.critic.width = 32
    validate_config(config)
    setup = make_setup(config, make_mesh(), make_optimizer(config))
    state = sharded_init(setup, jax.random.key(0))
    critic_before = jax.tree.map(np.asarray, state["critic"]["params"])
    train_step = step_lib.make_train_step(setup, config)
    batch = {"image": np.random.default_rng(0).uniform(-1, 1, (16, 32, 32, 1)).astype(np.float32),
             "label": np.arange(16, dtype=np.int32) % 10}
    for _ in range(2):
        state, metrics = train_step(state, batch)
        assert bool(metrics["finite"]) and {"g_adv", "d_loss", "D_real", "D_fake"} <= set(metrics)
    assert int(state["critic"]["opt_state"][0].count) == 2
    assert any(not np.allclose(a, b) for a, b in
               zip(jax.tree.leaves(critic_before), jax.tree.leaves(state["critic"]["params"])))

    ckpt = Checkpointer(tmp_path, keep=1, save_interval_steps=1, async_save=False)
    assert ckpt.save(2, state, data_state=None, config_json=config.to_json(), force=True)
    _, restored, _, _ = ckpt.restore(setup.abstract)
    for a, b in zip(jax.tree.leaves(state["critic"]), jax.tree.leaves(restored["critic"])):
        np.testing.assert_array_equal(a, b)
