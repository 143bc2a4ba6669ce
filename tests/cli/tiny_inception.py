"""scm-evaluate with the FID Inception-v3 swapped for a tiny random network of its interface:

    python -m tests.cli.tiny_inception --inception_weights=tiny_inception.npz ...    # scm-evaluate's flags

The real network (24M parameters at 299 px) takes minutes on a shared 2-core CPU; its port is checked against
pytorch_fid in tests/eval/test_inception_port.py. The stand-in (a strided conv, global mean, a linear layer) has
`FEATURE_DIM` features and `NUM_CLASSES` logits and loads from a weights file like the real one (`write`);
`patch` swaps it in for the real one in this process (the trainer's periodic evaluation).
"""
import builtins

import jax
import jax.numpy as jnp
from flax import nnx

from scm_jax.eval import inception
from scm_jax.models import weights

FEATURE_DIM, NUM_CLASSES = 16, 10


class TinyInception(nnx.Module):
    def __init__(self, *, rngs: nnx.Rngs):
        self.conv = nnx.Conv(3, FEATURE_DIM, (3, 3), strides=2, rngs=rngs)
        self.fc = nnx.Linear(FEATURE_DIM, NUM_CLASSES, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        features = jnp.tanh(self.conv(x)).mean(axis=(1, 2))
        return features, self.fc(features)


def write(path: str) -> None:
    weights.save_module(path, TinyInception(rngs=nnx.Rngs(0)))


def _load(path: str) -> TinyInception:
    return weights.load_module(path, lambda: TinyInception(rngs=nnx.Rngs(0)), missing_hint="tests.cli.tiny_inception")


def patch(setattr=builtins.setattr) -> None:
    """Swaps the FID Inception-v3 for the stand-in (`setattr`: a pytest MonkeyPatch's undoes it after the test)."""
    for name, value in (("FEATURE_DIM", FEATURE_DIM), ("NUM_CLASSES", NUM_CLASSES), ("load_inception", _load)):
        setattr(inception, name, value)


if __name__ == "__main__":
    patch()
    from scm_jax.cli import evaluate

    evaluate.run()
