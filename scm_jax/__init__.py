"""scm_jax: continuous-time consistency models (sCM) in JAX / Flax NNX."""
