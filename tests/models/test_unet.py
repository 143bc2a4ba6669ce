"""EDM2 U-Net: EDM2's parameter counts, magnitude preservation, conditioning, JVP through attention, sharding."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from scm_jax.models import unet as unet_module
from scm_jax.models.unet import SIZES, UNet, UNetConfig, mp_cat, mp_silu, mp_sum, unet_config
from scm_jax.parallel import sharding

EDM2_MILLIONS = {"S": 280, "M": 498, "L": 778, "XL": 1119, "XXL": 1523}  # EDM2 Table 2 (ImageNet-512)


def _tiny(**overrides) -> UNetConfig:
    base = dict(image_size=8, in_channels=2, channels=8, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(4,),
                channels_per_head=8, num_classes=3, time_scale=1000.0, block_q=8, block_k=8)
    return UNetConfig(**{**base, **overrides})


def _count(cfg: UNetConfig) -> int:
    _, state = nnx.split(nnx.eval_shape(lambda: UNet(cfg, rngs=nnx.Rngs(0))))
    return sum(a.size for a in jax.tree.leaves(state))


def _documented() -> dict[str, dict[str, int]]:
    """The docstring's table: size -> {modulation: count}."""
    rows = [line.split() for line in unet_module.__doc__.splitlines() if line.strip().split(" ")[0] in SIZES]
    return {r[0]: {r[2]: int(r[3].replace(",", "")), r[4]: int(r[5].replace(",", ""))} for r in rows}


def _switched_on(cfg: UNetConfig, seed: int = 0):
    """(graphdef, state) with the zero-initialised gains set to 1, so F depends on everything."""
    graphdef, state = nnx.split(UNet(cfg, rngs=nnx.Rngs(seed)))
    state = jax.tree.map_with_path(
        lambda path, a: jnp.ones_like(a) if "gain" in jax.tree_util.keystr(path) else a, state)
    return graphdef, state


@functools.partial(jax.jit, static_argnums=0, static_argnames="attention")
def _apply(graphdef, state, x, t, labels=None, guidance=None, *, attention=None):
    return nnx.merge(graphdef, state)(x, t, labels, guidance, attention=attention)


def _inputs(cfg: UNetConfig, batch: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, cfg.image_size, cfg.image_size, cfg.in_channels))
    return jnp.asarray(x, jnp.float32), jnp.asarray(rng.uniform(0.1, 1.5, batch), jnp.float32)


def test_edm2_sizes_match_edm2_and_the_documented_counts():
    """S exactly as documented (the others: slow test); with EDM2's modulation, EDM2's published total."""
    documented = _documented()
    assert set(documented) == set(SIZES)
    for modulation in ("edm2", "double_norm"):
        n = _count(unet_config("S", image_size=64, in_channels=4, num_classes=1000, modulation=modulation))
        assert n == documented["S"][modulation]
    assert round(documented["S"]["edm2"] / 1e6) == EDM2_MILLIONS["S"]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(SIZES))
def test_every_size_matches_its_documented_count(name):
    for modulation in ("edm2", "double_norm"):
        n = _count(unet_config(name, image_size=64, in_channels=4, num_classes=1000, modulation=modulation))
        assert n == _documented()[name][modulation]
    assert round(_documented()[name]["edm2"] / 1e6) == EDM2_MILLIONS[name]


def test_mp_ops_preserve_unit_variance():
    rng = np.random.default_rng(0)
    a, b = (jnp.asarray(rng.standard_normal((4096, 32)), jnp.float32) for _ in range(2))
    c = jnp.asarray(rng.standard_normal((4096, 96)), jnp.float32)
    for y in (mp_sum(a, b, 0.3), mp_cat(a, c, 0.5), mp_silu(a)):  # mp_silu: unit second moment (EDM2 Eq. 81)
        assert abs(float(jnp.sqrt(jnp.mean(jnp.square(y)))) - 1.0) < 0.02


@pytest.mark.parametrize("modulation", ["double_norm", "edm2"])
def test_output_is_zero_at_init_and_conditioned_once_switched_on(modulation):
    """F = 0 and w_phi = 0 at init (zero output gain and logvar layer); with the gains on, F depends on the class,
    the null class (labels=None) and time."""
    cfg = _tiny(modulation=modulation)
    graphdef, state = nnx.split(UNet(cfg, rngs=nnx.Rngs(0)))
    x, t = _inputs(cfg)
    F, logvar = _apply(graphdef, state, x, t, jnp.array([0, 1, 2]))
    assert F.shape == x.shape and F.dtype == jnp.float32 and not np.any(F) and not np.any(logvar)
    graphdef, state = _switched_on(cfg)
    x1, t1 = jnp.repeat(x[:1], 3, 0), jnp.repeat(t[:1], 3)
    F = _apply(graphdef, state, x1, t1, jnp.array([0, 1, 2]))[0]
    assert float(jnp.std(F[0])) > 0.1
    assert float(jnp.abs(F[0] - F[1]).max()) > 1e-3 and float(jnp.abs(F[1] - F[2]).max()) > 1e-3
    F_null = _apply(graphdef, state, x1, t1)[0]
    assert float(jnp.abs(F_null[0] - F[0]).max()) > 1e-3
    F_later = _apply(graphdef, state, x1, t1 + 0.01, jnp.array([0, 1, 2]))[0]
    assert float(jnp.abs(F_later - F).max()) > 1e-3  # time_scale 1000: 0.01 in t is visible


def test_guidance_input_starts_as_a_no_op():
    """sCD students start from a teacher without a guidance input: its gain is zero at init."""
    cfg = _tiny(guidance_embed=True)
    graphdef, state = nnx.split(UNet(cfg, rngs=nnx.Rngs(0)))
    state = jax.tree.map_with_path(
        lambda path, a: jnp.ones_like(a) if "out_gain" in jax.tree_util.keystr(path) else a, state)
    x, t = _inputs(cfg)
    labels = jnp.array([0, 1, 2])
    F1 = _apply(graphdef, state, x, t, labels, jnp.ones(3))[0]
    F2 = _apply(graphdef, state, x, t, labels, 2 * jnp.ones(3))[0]
    np.testing.assert_array_equal(F1, F2)


def test_jvp_through_blockwise_attention_equals_autodiff_of_the_reference():
    """sCM's tangent pass: jax.jvp with the blockwise custom_jvp attention equals autodiff of plain attention."""
    cfg = _tiny()
    graphdef, state = _switched_on(cfg)
    x, t = _inputs(cfg)
    tx, tt = _inputs(cfg, seed=1)
    labels = jnp.array([0, 1, 2])

    def tangent(kind):
        f = lambda x, t: nnx.merge(graphdef, state)(x, t, labels, attention=kind)[0]
        return jax.jit(lambda x, t, tx, tt: jax.jvp(f, (x, t), (tx, tt)))(x, t, tx, tt)

    (F_ref, dF_ref), (F_blk, dF_blk) = tangent("reference"), tangent("blockwise")
    np.testing.assert_allclose(F_blk, F_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(dF_blk, dF_ref, rtol=1e-3, atol=1e-3 * float(jnp.abs(dF_ref).max()))
    assert float(jnp.abs(dF_ref).max()) > 0


def test_remat_gives_the_same_gradient():
    cfg = _tiny()
    graphdef, state = _switched_on(cfg)
    x, t = _inputs(cfg)

    def grad(remat):
        g = nnx.split(UNet(_tiny(remat=remat), rngs=nnx.Rngs(0)))[0]
        return jax.jit(jax.grad(lambda s: jnp.sum(nnx.merge(g, s)(x, t, jnp.array([0, 1, 2]))[0] ** 2)))(state)

    for a, b in zip(jax.tree.leaves(grad("none")), jax.tree.leaves(grad("full"))):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_every_parameter_has_logical_axes_that_shard_on_a_mesh():
    _, state = nnx.split(nnx.eval_shape(lambda: UNet(_tiny(channels=16), rngs=nnx.Rngs(0))))
    for path, v in jax.tree.leaves_with_path(state, is_leaf=lambda v: isinstance(v, nnx.Variable)):
        names = v.get_metadata().get("out_sharding")
        assert v.ndim == 0 or (names and len(names) == v.ndim and set(names) <= {*sharding.LOGICAL_AXES, None}), \
            jax.tree_util.keystr(path)
    mesh = jax.make_mesh((8,), ("fsdp",), axis_types=(jax.sharding.AxisType.Auto,))
    specs = sharding.param_specs(state, sharding.RULES["fsdp"], mesh)
    assert specs["dec"][0]["conv_res0"]["w"] == jax.P(None, None, "fsdp", None)  # 32 input channels over 8


@pytest.mark.parametrize("overrides, message", [
    (dict(image_size=10, channel_mult=(1, 2, 2)), "image_size 10 must halve 2 times"),
    (dict(channels_per_head=5), "channels_per_head 5 must divide"),
    (dict(modulation="film"), "unknown modulation 'film'"),
    (dict(attention="flash"), "unknown attention 'flash'"),
    (dict(dropout=1.0), r"dropout must be in \[0, 1\)"),
])
def test_bad_config_raises_clear_error(overrides, message):
    with pytest.raises(ValueError, match=message):
        _tiny(**overrides)
