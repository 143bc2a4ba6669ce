"""DiT: shapes, conditioning, JVP (blockwise custom rule vs autodiff vs finite differences), sizes, sharding."""
import dataclasses
import functools
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scm_jax.models import dit as dit_module
from scm_jax.models.dit import SIZES, DiT, DiTBlock, DiTConfig, dit_config, logical_axes
from scm_jax.models.layers import dropout

LOGICAL_NAMES = {"embed", "cond", "mlp", "heads", "head_dim", "patch", "classes", "freq", None}


def _tiny(**overrides) -> DiTConfig:
    base = dict(image_size=8, in_channels=3, patch_size=2, hidden_size=32, depth=2, num_heads=4, block_q=8, block_k=8)
    return DiTConfig(**{**base, **overrides})


def _randomised(cfg: DiTConfig, seed: int = 0, scale: float = 0.2):
    """(graphdef, params) from abstract init with every parameter drawn N(0, scale^2), so the zero-initialised
    gates and output layer no longer hide how F depends on x, t, labels and guidance. numpy RNG: on this CPU
    each jax.random op costs a compile of about a second."""
    graphdef, state = nnx.split(nnx.eval_shape(lambda: DiT(cfg, rngs=nnx.Rngs(0))))
    rng = np.random.default_rng(seed)
    return graphdef, jax.tree.map(lambda a: jnp.asarray(scale * rng.standard_normal(a.shape), a.dtype), state)


@functools.partial(jax.jit, static_argnums=0, static_argnames="attention")
def _apply(graphdef, state, x, t, labels=None, guidance=None, *, dropout_key=None, attention=None):
    return nnx.merge(graphdef, state)(x, t, labels, guidance, dropout_key=dropout_key, attention=attention)


def _inputs(cfg: DiTConfig, batch: int = 2, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, cfg.image_size, cfg.image_size, cfg.in_channels))
    return jnp.asarray(x, jnp.float32), jnp.asarray(rng.uniform(0.1, 1.5, batch), jnp.float32)


def _rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


@pytest.mark.parametrize(
    "overrides",
    [
        dict(image_size=32, in_channels=1, patch_size=4, num_classes=10),  # pixels, 64 tokens
        dict(image_size=16, in_channels=4, patch_size=2),  # latents, unconditional
        dict(image_size=20, in_channels=3, patch_size=4, attention="blockwise"),  # 25 tokens: padded tiles
    ],
)
def test_output_shapes(overrides):
    cfg = _tiny(depth=1, **overrides)
    graphdef, state = nnx.split(nnx.eval_shape(lambda: DiT(cfg, rngs=nnx.Rngs(0))))
    x = jax.ShapeDtypeStruct((3, cfg.image_size, cfg.image_size, cfg.in_channels), jnp.float32)
    t = jax.ShapeDtypeStruct((3,), jnp.float32)
    F, logvar = jax.eval_shape(lambda state, x, t: nnx.merge(graphdef, state)(x, t), state, x, t)
    assert F.shape == x.shape and F.dtype == jnp.float32
    assert logvar.shape == (3,) and logvar.dtype == jnp.float32


def _same_sample(cfg: DiTConfig, batch: int):
    """`batch` copies of one (x, t), so that per-sample conditioning is compared within one call."""
    x, t = _inputs(cfg, batch=1)
    return jnp.repeat(x, batch, axis=0), jnp.repeat(t, batch)


def test_blocks_start_as_identity_and_guidance_as_a_no_op():
    """Zero-initialised gates, output projection and logvar head: each block is the identity and F = 0, w_phi = 0
    at init; with the output projection switched on, the zero-initialised guidance embedding still has no effect
    (sCD students start from the teacher)."""
    cfg = _tiny(depth=1, guidance_embed=True)
    x, t = _same_sample(cfg, 2)

    @jax.jit
    def run():
        model = DiT(cfg, rngs=nnx.Rngs(jax.random.key(0, impl="unsafe_rbg")))  # rbg: a faster compile on CPU
        h = jnp.ones((2, cfg.grid**2, cfg.hidden_size))
        block_change = model.blocks[0](h, jnp.ones((2, cfg.hidden_size)), None, "reference") - h
        zero_init = (model.final.linear.kernel[...], model.final.linear.bias[...], model.logvar.fc2.kernel[...])
        model.final.linear.kernel[...] = jnp.ones_like(model.final.linear.kernel[...])
        return block_change, zero_init, model(x, t, guidance=jnp.array([1.0, 2.0]))

    block_change, zero_init, (F, logvar) = run()
    np.testing.assert_array_equal(block_change, 0.0)
    for p in zero_init:  # hence F = 0 and w_phi = 0 at init
        np.testing.assert_array_equal(p, 0.0)
    np.testing.assert_array_equal(logvar, 0.0)
    assert float(jnp.abs(F).max()) > 0
    np.testing.assert_array_equal(F[0], F[1])


_COND_CFG = _tiny(num_classes=7, guidance_embed=True, depth=1)


def test_labels_and_guidance_condition_the_output():
    graphdef, state = _randomised(_COND_CFG)
    x, t = _same_sample(_COND_CFG, 4)
    null = _COND_CFG.num_classes
    F_none, logvar_none = _apply(graphdef, state, x, t, None, jnp.ones(4))
    F, logvar = _apply(graphdef, state, x, t, jnp.array([null, 3, 6, 3]), jnp.array([1.0, 1.0, 1.0, 1.5]))
    np.testing.assert_allclose(F_none[0], F[0], rtol=1e-6, atol=1e-6)  # labels=None is the null class
    assert _rel(F[2], F[1]) > 1e-3  # the class matters
    assert _rel(F[3], F[1]) > 1e-3  # the guidance scale matters
    np.testing.assert_array_equal(logvar, logvar_none)  # w_phi sees the time only
    model = nnx.merge(graphdef, state)
    with pytest.raises(ValueError, match="guidance_embed=True needs a guidance scale"):
        model(x, t, None)
    with pytest.raises(ValueError, match=r"x has shape \(4, 4, 4, 3\)"):
        model(x[:, :4, :4], t, None, jnp.ones(4))
    with pytest.raises(ValueError, match=r"t has shape \(\); pass one time per sample"):
        model(x, t[0], None, jnp.ones(4))


@functools.partial(jax.jit, static_argnums=(0, 6))
def _tangent(graphdef, state, x, t, tx, tt, attention):
    """The sCM tangent pass: jax.jvp of (F, w_phi) in (x, t)."""
    return jax.jvp(lambda x, t: _apply(graphdef, state, x, t, attention=attention), (x, t), (tx, tt))[1]


def _tangent_case():
    # 16 tokens in blocks of 8: several query tiles and key blocks. time_scale 1: a float32 central difference
    # cannot resolve the 1,000x time derivative of the default (the JVP itself is exact either way).
    cfg = _tiny(num_classes=5, depth=1, time_scale=1.0)
    graphdef, state = _randomised(cfg)
    x, t = _inputs(cfg)
    tx = jnp.asarray(np.random.default_rng(5).standard_normal(x.shape), jnp.float32)
    return cfg, graphdef, state, (x, t, tx, jnp.array([0.7, -0.4]))


def test_dit_jvp_blockwise_rule_matches_autodiff_and_finite_differences():
    _, graphdef, state, (x, t, tx, tt) = _tangent_case()
    dF_blockwise, dlogvar = _tangent(graphdef, state, x, t, tx, tt, "blockwise")
    dF_reference, _ = _tangent(graphdef, state, x, t, tx, tt, "reference")

    @jax.jit
    def central_difference(state, eps=1e-3):  # error O(eps^2) + float32 round-off / eps
        plus, minus = (_apply(graphdef, state, x + e * tx, t + e * tt) for e in (eps, -eps))
        return jax.tree.map(lambda a, b: (a - b) / (2 * eps), plus, minus)

    dF_fd, dlogvar_fd = central_difference(state)
    assert _rel(dF_blockwise, dF_reference) < 1e-5
    assert _rel(dF_reference, dF_fd) < 2e-3 and _rel(dlogvar, dlogvar_fd) < 2e-3


@pytest.mark.slow
def test_bfloat16_tangent_is_close_and_its_time_path_float32():
    cfg, graphdef, state, args = _tangent_case()
    graphdef16, _ = _randomised(dataclasses.replace(cfg, dtype="bfloat16"))
    dF, dlogvar = _tangent(graphdef, state, *args, "reference")
    dF16, dlogvar16 = _tangent(graphdef16, state, *args, "blockwise")
    assert dF16.dtype == jnp.float32 and _rel(dF16, dF) < 1e-1
    np.testing.assert_allclose(dlogvar16, dlogvar, rtol=1e-6)


@pytest.mark.slow
def test_remat_gives_the_same_gradient_with_dropout():
    cfg = _tiny(dropout=0.5, depth=1)
    graphdef, state = _randomised(cfg)
    graphdef_remat, _ = _randomised(dataclasses.replace(cfg, remat="dots"))
    x, t = _inputs(cfg)
    key = jax.random.key(1, impl="unsafe_rbg")  # rbg: a faster compile on CPU

    @jax.jit
    def run(state):
        grad = jax.value_and_grad(lambda g, st: jnp.sum(_apply(g, st, x, t, dropout_key=key)[0] ** 2), argnums=1)
        return grad(graphdef, state), grad(graphdef_remat, state)

    (loss, grads), (loss_remat, grads_remat) = run(state)
    np.testing.assert_allclose(loss_remat, loss, rtol=1e-5)
    chex.assert_trees_all_close(grads_remat, grads, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("remat", ["full", "dots"])
def test_remat_dropout_and_bfloat16_trace_with_the_right_dtypes(remat):
    """Tracing only (no compile): gradients through per-block remat with dropout, and the bfloat16 tangent
    pass, come out float32. The numerics are checked by the two slow tests above."""
    cfg = _tiny(dropout=0.5, depth=1, remat=remat, dtype="bfloat16")
    graphdef, state = nnx.split(nnx.eval_shape(lambda: DiT(cfg, rngs=nnx.Rngs(0))))
    x, t = _inputs(cfg)
    key = jax.random.key(1, impl="unsafe_rbg")
    loss = lambda st: jnp.sum(nnx.merge(graphdef, st)(x, t, dropout_key=key)[0])  # noqa: E731
    grads = jax.eval_shape(jax.grad(loss), state)
    assert all(g.dtype == jnp.float32 for g in jax.tree.leaves(grads))
    tangent = jax.eval_shape(
        lambda st: jax.jvp(lambda t: nnx.merge(graphdef, st)(x, t, attention="blockwise"), (t,), (t,))[1], state)
    assert [a.dtype for a in tangent] == [jnp.float32, jnp.float32]


def test_dropout_is_a_pure_function_of_its_key():
    x = jnp.ones((4, 256))
    k1, k2 = jax.random.key(1, impl="unsafe_rbg"), jax.random.key(2, impl="unsafe_rbg")
    assert dropout(x, 0.5, None) is x
    y1, y1_again, y2 = (jax.jit(dropout, static_argnums=1)(x, 0.5, k) for k in (k1, k1, k2))
    np.testing.assert_array_equal(y1, y1_again)
    assert set(np.unique(y1)) == {0.0, 2.0} and not np.array_equal(y1, y2)


def test_jit_does_not_retrace_on_new_values():
    cfg = _tiny(depth=1)
    graphdef, state = _randomised(cfg)

    @jax.jit
    @chex.assert_max_traces(n=1)
    def F(state, x, t):
        return nnx.merge(graphdef, state)(x, t)[0]

    for seed in range(3):
        x, t = _inputs(cfg, seed=seed)
        F(state, x, t)


def _documented_sizes() -> dict[str, tuple[int, int, int, int]]:
    rows = re.findall(r"^\s+(\S+)\s+\((\d+),\s*(\d+),\s*(\d+)\)\s+([\d,]+)$", dit_module.__doc__, re.MULTILINE)
    return {name: tuple(int(v.replace(",", "")) for v in vals) for name, *vals in rows}


def _abstract_count(module_fn) -> int:
    return sum(x.size for x in jax.tree.leaves(nnx.state(nnx.eval_shape(module_fn), nnx.Param)))


def test_documented_sizes_and_param_counts():
    """Each documented count from abstract init (no memory). Blocks are identical, so count(depth) =
    count(depth=1) + (depth - 1) * count(block): two small abstract inits per size instead of a deep one."""
    documented = _documented_sizes()
    assert set(documented) == set(SIZES)
    for name, (depth, width, heads, count) in documented.items():
        assert SIZES[name] == dict(depth=depth, hidden_size=width, num_heads=heads)
        cfg = dit_config(name, image_size=32, in_channels=4, patch_size=2, num_classes=1000, depth=1)
        n = _abstract_count(lambda: DiT(cfg, rngs=nnx.Rngs(0)))
        n += (depth - 1) * _abstract_count(lambda: DiTBlock(cfg, rngs=nnx.Rngs(0)))
        assert abs(n - count) <= 0.03 * count, (name, n, count)


def test_depth_adds_identical_blocks():
    one, two = (_tiny(num_classes=3, depth=d) for d in (1, 2))
    block = _abstract_count(lambda: DiTBlock(one, rngs=nnx.Rngs(0)))
    assert _abstract_count(lambda: DiT(two, rngs=nnx.Rngs(0))) == _abstract_count(lambda: DiT(one, rngs=nnx.Rngs(0))) \
        + block


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SIZES))
def test_full_depth_abstract_init_matches_the_documented_count(name):
    """About a minute in all: abstract init of the deep models is slow in flax 0.12.8 (each RNG draw inspects
    the whole trace), hence the extrapolation in the default run."""
    cfg = dit_config(name, image_size=32, in_channels=4, patch_size=2, num_classes=1000)
    assert _abstract_count(lambda: DiT(cfg, rngs=nnx.Rngs(0))) == _documented_sizes()[name][3]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(image_size=30, patch_size=4), "patch_size 4 does not divide image_size 30"),
        (dict(hidden_size=36, num_heads=5), "num_heads 5 does not divide hidden_size 36"),
        (dict(attention="flash"), "unknown attention 'flash'"),
        (dict(remat="some"), "unknown remat 'some'"),
        (dict(dtype="float16"), "dtype='float16' is not supported"),
        (dict(attention="cudnn"), "attention='cudnn' needs dtype='bfloat16'"),
        (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
    ],
)
def test_bad_config_raises_clear_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        _tiny(**overrides)


def test_unknown_size_raises():
    with pytest.raises(ValueError, match="unknown DiT size 'XXXL'"):
        dit_config("XXXL", image_size=32, in_channels=4, patch_size=2)


def test_every_parameter_has_logical_axes_and_shards_on_a_mesh():
    graphdef, state = _randomised(_COND_CFG)
    axes = logical_axes(state)
    for (path, v), spec in zip(jax.tree.leaves_with_path(state), jax.tree.leaves(axes)):
        assert len(spec) == v.ndim and set(spec) <= LOGICAL_NAMES, (jax.tree_util.keystr(path), spec)

    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    rules = (("batch", "data"), ("mlp", "model"), ("heads", "model"), ("embed", None), ("cond", None),
             ("length", None), ("head_dim", None), ("patch", None), ("classes", None), ("freq", None))
    x, t = _same_sample(_COND_CFG, 4)
    s = jnp.ones(4)
    F_ref, _ = _apply(graphdef, state, x, t, None, s)  # compiled already by the labels test
    with jax.set_mesh(mesh), nnx.logical_axis_rules(rules):
        specs = nnx.get_partition_spec(state)
        assert specs["blocks"][0]["mlp"]["fc1"]["kernel"].get_value() == jax.P(None, "model")
        shardings = jax.tree.map(lambda p: jax.NamedSharding(mesh, p), specs)
        sharded = jax.device_put(state, shardings)
        xs = jax.device_put(x, jax.NamedSharding(mesh, jax.P("data")))
        F, _ = jax.jit(lambda st, x: nnx.merge(graphdef, st)(x, t, None, s))(sharded, xs)
    assert F.sharding.spec[0] == "data"
    np.testing.assert_allclose(F, F_ref, rtol=1e-4, atol=1e-5)
