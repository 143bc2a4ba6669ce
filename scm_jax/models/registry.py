"""The network families a run can use, picked by `config.model.name`.

Each family is an NNX module built from a frozen config dataclass and called as
`model(x, t, labels, guidance, *, dropout_key, attention) -> (F, logvar)`; nothing else in the package knows which
family it runs. `config.model` holds the fields of every family; each takes the ones its dataclass names.
"""
import dataclasses
from typing import Callable, Optional

from flax import nnx

from scm_jax.models.dit import DiT, DiTConfig
from scm_jax.models.unet import UNet, UNetConfig

FAMILIES = {"dit": (DiT, DiTConfig), "unet": (UNet, UNetConfig)}
ModelConfig = DiTConfig | UNetConfig


def model_config(name: str, **fields) -> ModelConfig:
    """The family's config from `fields`, ignoring the fields of other families."""
    if name not in FAMILIES:
        raise ValueError(f"model.name={name!r} is unknown; use one of {tuple(FAMILIES)}.")
    cls = FAMILIES[name][1]
    known = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in fields.items() if k in known})


def build(model_cfg: ModelConfig, rngs: nnx.Rngs) -> nnx.Module:
    """The network of `model_cfg`'s family."""
    module = next(m for m, c in FAMILIES.values() if isinstance(model_cfg, c))
    return module(model_cfg, rngs=rngs)


def model_apply(graphdef: nnx.GraphDef, params, attention: Optional[str] = None) -> Callable:
    """apply_fn(x_in, t, labels, guidance, dropout_key) -> (F, w_phi) of the split network with `params`."""
    model = nnx.merge(graphdef, params)

    def apply(x_in, t, labels=None, guidance=None, dropout_key=None):
        return model(x_in, t, labels, guidance, dropout_key=dropout_key, attention=attention)
    return apply
