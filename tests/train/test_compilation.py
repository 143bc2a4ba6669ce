"""XLA's FLOPs of a step (the accumulation scan counted per microbatch) and where the compilation cache goes."""
import jax
import jax.numpy as jnp
import pytest

from scm_jax.train import compilation


def test_step_flops_counts_the_accumulation_scan_per_microbatch():
    w = jnp.ones((64, 64))
    step = jax.jit(lambda state, batch: (state, batch["image"] @ state))
    one = compilation.step_flops(step, w, {"image": jnp.ones((8, 64))}, accum_steps=1)
    assert one == pytest.approx(2 * 8 * 64 * 64, rel=0.01)
    assert compilation.step_flops(step, w, {"image": jnp.ones((8, 64))}, accum_steps=4) == 4 * one


def test_a_wrapped_step_has_no_flops():
    assert compilation.step_flops(lambda state, batch: (state, batch), 0, {}, accum_steps=1) is None


@pytest.mark.parametrize("setting, platform, jax_dir, expected", [
    ("", "gpu", None, "/run/compile_cache"),        # accelerators: the workdir's cache
    ("", "tpu", None, "/run/compile_cache"),
    ("", "cpu", None, None),                        # CPU: none by default
    ("", "cpu", "/jax/cache", "/jax/cache"),        # JAX_COMPILATION_CACHE_DIR wins over the default
    ("/shared/cache", "cpu", "/jax/cache", "/shared/cache"),
    ("gs://b/cache", "tpu", None, "gs://b/cache"),
    ("off", "tpu", "/jax/cache", None),
])
def test_cache_directory(setting, platform, jax_dir, expected):
    assert compilation.cache_dir(setting, "/run", platform, jax_dir) == expected
