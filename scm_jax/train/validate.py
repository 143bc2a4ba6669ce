"""Config validation before any compute: each problem is one clear error naming the fix."""
import jax
from ml_collections import ConfigDict

from scm_jax.parallel.mesh import mesh_shape
from scm_jax.parallel.sharding import RULES

OBJECTIVES = ("diffusion", "sct", "scd")


def validate_config(config: ConfigDict) -> None:
    def require(ok: bool, message: str) -> None:
        if not ok:
            raise ValueError(f"config: {message}")

    require(config.objective in OBJECTIVES, f"objective={config.objective!r}; use one of {OBJECTIVES}.")
    require(config.mesh.rules in RULES, f"mesh.rules={config.mesh.rules!r}; use one of {tuple(RULES)}.")
    data, fsdp, _ = mesh_shape(config.mesh.data, config.mesh.fsdp, config.mesh.tensor, jax.device_count())
    require(config.train.batch_size % (data * fsdp) == 0,
            f"train.batch_size={config.train.batch_size} is not divisible by the data-parallel size "
            f"data*fsdp={data * fsdp}; use a multiple of it.")
    require(config.train.batch_size % jax.process_count() == 0,
            f"train.batch_size={config.train.batch_size} is not divisible by {jax.process_count()} processes.")
    require(config.train.steps > 0 and config.train.log_every > 0, "train.steps and train.log_every must be > 0.")
    require(len(config.train.ema_half_lives_mimg) > 0, "train.ema_half_lives_mimg needs at least one half-life.")
    require(config.objective != "scd" or bool(config.scm.teacher_workdir),
            "objective='scd' needs scm.teacher_workdir: the workdir of a finished diffusion run "
            "(--config.scm.teacher_workdir=runs/teacher).")
    require(config.data.kind in ("pixels", "latents"), f"data.kind={config.data.kind!r}; use pixels or latents.")
