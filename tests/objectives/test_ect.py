"""ECT (spec §5): the shrinking r(t) schedule, traced without retracing, and its loss."""
import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from scm_jax.objectives import ect
from tests.objectives.cm_oracles import F_cm

OPTS = ect.ECTOptions(q=2.0, k=8.0, b=1.0, stage_steps=10)


@pytest.mark.parametrize("step", [0, 9, 10, 35, 1000])
def test_r_matches_its_formula(step):
    t = jnp.array([0.01, 0.3, 1.0, 5.0, 80.0])
    a = 1 + step // 10
    expected = [max(ti * (1 - (1 + 8 / (1 + math.exp(ti))) / 2.0**a), 0.0) for ti in t.tolist()]
    np.testing.assert_allclose(ect.ect_r(t, jnp.array(step), OPTS), expected, rtol=1e-5, atol=1e-7)


def test_gap_shrinks_by_stage_without_retracing():
    t = jnp.linspace(0.01, 80.0, 50)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def ratio(step):
        return jnp.mean(ect.ect_r(t, step, OPTS) / t)

    ratios = [float(ratio(jnp.array(s))) for s in (0, 10, 20, 40)]
    assert ratios == sorted(ratios) and ratios[0] < ratios[-1] < 1.0


def test_loss_is_finite_with_weight_one_over_t_minus_r():
    batch = {"x0": 0.8 * jax.random.normal(jax.random.key(0), (256, 8))}
    apply = F_cm(0.8, OPTS.precond)
    loss, m = ect.ect_loss(apply, apply, batch, jax.random.key(1), jnp.array(0), OPTS)
    assert np.isfinite(float(loss)) and float(loss) > 0 and 0.0 <= float(m["r_over_t"]) < 1.0


def test_bad_options_raise():
    with pytest.raises(ValueError, match="q > 1"):
        ect.ECTOptions(q=1.0)
