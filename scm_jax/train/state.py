"""The training state: a plain pytree {params, opt_state, ema: {name: params}, step, rng} and its shardings
(+ `target`, the EMA theta^- of CM's CD / CT, for objectives whose spec has ema_target; + `critic`, PCM's
adversarial critic {params, opt_state}, see train.critic).

The NNX model is split once: `graphdef` is static, parameters travel as a pure dict (what Orbax saves).
Abstract init (`nnx.eval_shape`) -> shardings from logical-axis rules -> sharded init inside one jit.
"""
import dataclasses
from typing import Any, Optional

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import PartitionSpec as P
from ml_collections import ConfigDict

from scm_jax.models.registry import ModelConfig, build, model_config
from scm_jax.objectives import registry
from scm_jax.parallel import sharding
from scm_jax.train import ema
from scm_jax.train.critic import CriticSetup, critic_setup, critic_specs


def run_model_config(config: ConfigDict) -> ModelConfig:
    """The network of a run (config.model.name): model fields + the data's shape and classes (+ guidance input for
    guided sCD)."""
    guided = registry.spec(config).distills(config) and (config.scm.guidance_lo, config.scm.guidance_hi) != (1.0, 1.0)
    return model_config(image_size=config.data.image_size, in_channels=config.data.channels,
                        num_classes=config.data.num_classes, guidance_embed=guided, **config.model.to_dict())


@dataclasses.dataclass(frozen=True)
class Setup:
    """Everything static about a run's state: the graph, the optimizer and the shardings."""
    model_cfg: ModelConfig
    graphdef: nnx.GraphDef
    tx: optax.GradientTransformation
    abstract: Any                     # pytree of ShapeDtypeStruct (with .sharding) of the whole train state
    specs: Any                        # PartitionSpecs of the train state
    mesh: jax.sharding.Mesh
    ema_half_lives: dict[str, float]  # EMA name -> half-life in Mimg (decay at a step: train.ema.ema_decay)
    target: bool = False              # the state holds CM's EMA target network theta^- (float32, like the EMAs)
    critic: Optional[CriticSetup] = None  # the state holds PCM's adversarial critic

    @property
    def shardings(self) -> Any:
        return sharding.named(self.mesh, self.specs)


def model_specs(model_cfg: ModelConfig, rules: tuple, mesh: jax.sharding.Mesh) -> tuple[nnx.GraphDef, dict, dict]:
    """The network's graph, its parameters as ShapeDtypeStructs and their PartitionSpecs, from abstract init (no
    memory; about 15 s for DiT-1.5B on 2 CPU cores)."""
    graphdef, abstract_params = nnx.split(nnx.eval_shape(lambda: build(model_cfg, nnx.Rngs(0))))
    return graphdef, nnx.to_pure_dict(abstract_params), sharding.param_specs(abstract_params, rules, mesh)


def make_setup(config: ConfigDict, mesh: jax.sharding.Mesh, tx: optax.GradientTransformation) -> Setup:
    model_cfg = run_model_config(config)
    graphdef, _, p_specs = model_specs(model_cfg, sharding.rules_for(config.mesh.rules, mesh), mesh)
    half_lives = {ema.ema_name(h): h for h in config.train.ema_half_lives_mimg}
    target, critic = registry.spec(config).ema_target, critic_setup(config)
    abstract = jax.eval_shape(lambda: init_state(model_cfg, tx, half_lives, jax.random.key(0), target, critic))
    specs = {"params": p_specs, "opt_state": sharding.opt_state_specs(tx, abstract["opt_state"], p_specs),
             "ema": {name: p_specs for name in half_lives}, "step": P(), "rng": P(),
             **({"target": p_specs} if target else {}),
             **({"critic": critic_specs(abstract["critic"])} if critic else {})}
    named = sharding.named(mesh, specs)
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract, named)
    return Setup(model_cfg, graphdef, tx, abstract, specs, mesh, half_lives, target, critic)


def init_state(model_cfg: ModelConfig, tx: optax.GradientTransformation, emas: dict[str, float],
               key: jax.Array, target: bool = False, critic: Optional[CriticSetup] = None) -> dict:
    """Fresh state: network parameters from `key`, optimizer state, EMAs (and the target) equal to the parameters
    (float32), step 0 (and the critic from its own key)."""
    k_init, k_train = jax.random.split(key)
    params = nnx.to_pure_dict(nnx.split(build(model_cfg, nnx.Rngs(k_init)))[1])
    f32 = lambda: jax.tree.map(lambda p: p.astype(jnp.float32), params)
    return {"params": params, "opt_state": tx.init(params), "ema": {name: f32() for name in emas},
            "step": jnp.zeros((), jnp.int32), "rng": jax.random.key_data(k_train),
            **({"target": f32()} if target else {}),
            **({"critic": critic.init(jax.random.fold_in(k_init, 1))} if critic else {})}


def sharded_init(setup: Setup, key: jax.Array) -> dict:
    """Initialise directly into the target shardings (no host copy of the full model)."""
    init = lambda k: init_state(setup.model_cfg, setup.tx, setup.ema_half_lives, k, setup.target, setup.critic)
    return jax.jit(init, out_shardings=setup.shardings)(key)
