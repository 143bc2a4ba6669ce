"""scm_jax: continuous-time consistency models (sCM) in JAX / Flax NNX.

    import scm_jax
    model = scm_jax.load("runs/scd")                      # a scm-train workdir or an scm-export directory
    images = model.sample(16, steps=2, labels=7, seed=0)  # uint8 NHWC numpy

`load` and `Model` live in scm_jax.inference, imported on first use so that `import scm_jax.<module>` stays light.
"""
__all__ = ["load", "Model"]


def __getattr__(name: str):
    if name in __all__:
        from scm_jax import inference
        return getattr(inference, name)
    raise AttributeError(f"module 'scm_jax' has no attribute {name!r}")
