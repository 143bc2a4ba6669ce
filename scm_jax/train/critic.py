"""PCM's adversarial critic in the train state: state["critic"] = {"params", "opt_state"} (objective "pcm" with
pcm.adv_weight > 0; PCM §3.4).

The critic is a small MLP (models.discriminator) with its own Adam, replicated on every device. Each train step
first takes the student's gradient of d + adv_weight * (-D(fake)) with the critic fixed, then one hinge update of
the critic on the same phase pair (the step's key; with gradient accumulation the critic takes the whole batch
under that key), with the student at its pre-update weights. The checkpoint carries the critic, so a resumed run
continues the same game.
"""
import dataclasses
import functools
from typing import Callable, Optional

import jax
import optax
from flax import nnx
from jax.sharding import PartitionSpec as P
from ml_collections import ConfigDict

from scm_jax.models.discriminator import Discriminator
from scm_jax.objectives import registry
from scm_jax.objectives.pcm import DiscFn


@dataclasses.dataclass(frozen=True)
class CriticSetup:
    build: Callable[..., Discriminator]  # build(rngs=...)
    graphdef: nnx.GraphDef
    tx: optax.GradientTransformation

    def init(self, key: jax.Array) -> dict:
        params = nnx.to_pure_dict(nnx.split(self.build(rngs=nnx.Rngs(key)))[1])
        return {"params": params, "opt_state": self.tx.init(params)}

    def disc_fn(self, params) -> DiscFn:
        return nnx.merge(self.graphdef, params)  # (x_in, tau, labels) -> logits


def critic_setup(config: ConfigDict) -> Optional[CriticSetup]:
    """The critic's constructor, graph and optimizer, or None when the run has no adversarial loss."""
    if not registry.spec(config).critic or config.pcm.adv_weight <= 0:
        return None
    c, d = config.pcm.critic, config.data
    build = functools.partial(Discriminator, d.image_size * d.image_size * d.channels, c.width, c.depth,
                              num_classes=d.num_classes)
    graphdef = nnx.split(nnx.eval_shape(lambda: build(rngs=nnx.Rngs(0))))[0]
    return CriticSetup(build, graphdef, optax.adam(c.lr, b1=c.b1, b2=c.b2))


def critic_specs(abstract_critic: dict) -> dict:
    """Replicated: the critic is a few MB."""
    return jax.tree.map(lambda _: P(), abstract_critic)
