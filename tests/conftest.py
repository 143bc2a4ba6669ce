"""Every test sees 8 fake CPU devices (set before jax is imported)."""
import os

os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8"
).strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

jax.config.update("jax_default_matmul_precision", "highest")

# Identical programs compiled by different tests (every real training run jits its own step) hit this cache.
jax.config.update("jax_compilation_cache_dir", os.path.join(os.environ.get("TMPDIR", "/tmp"), "scm_jax_jit_cache"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
