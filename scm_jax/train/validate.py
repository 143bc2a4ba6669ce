"""Validation before any compute: config, data, workdir. Each problem is one clear error naming the fix."""
import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from typing import Any

import jax
import numpy as np
from ml_collections import ConfigDict

from scm_jax.data.storage import ArrayFeatures
from scm_jax.models.attention import ATTENTION_KINDS
from scm_jax.objectives import registry
from scm_jax.parallel.mesh import mesh_shape
from scm_jax.parallel.sharding import RULES
from scm_jax.train import runs

TANGENT_KINDS = ("same",) + ATTENTION_KINDS  # "same": share the student's pass and kernel
POSITIVE = ("train.batch_size", "train.steps", "train.log_every", "train.max_bad_steps", "optim.lr",
            "checkpoint.every_steps", "checkpoint.keep", "model.patch_size", "model.hidden_size", "model.depth",
            "model.num_heads", "data.image_size", "data.channels")
NON_NEGATIVE = ("sample.every_steps", "eval.every_steps", "optim.warmup_steps", "optim.decay_steps",
                "optim.cooldown_steps", "optim.grad_clip", "data.num_classes")
SPOT_CHECKS = 16  # records read by validate_data, spread evenly over the data set


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"config: {message}")


def _get(config: ConfigDict, dotted: str) -> Any:
    node = config
    for key in dotted.split("."):
        node = node[key]
    return node


def validate_config(config: ConfigDict) -> None:
    spec = registry.spec(config)  # an unknown objective: one clear error
    _require(config.mesh.rules in RULES, f"mesh.rules={config.mesh.rules!r}; use one of {tuple(RULES)}.")
    for keys, ok, bound in ((POSITIVE, lambda v: v > 0, "> 0"), (NON_NEGATIVE, lambda v: v >= 0, ">= 0")):
        for key in keys:
            _require(ok(_get(config, key)), f"{key}={_get(config, key)!r}; it must be {bound}.")
    _require(config.optim.cooldown_steps <= config.train.steps,
             f"optim.cooldown_steps={config.optim.cooldown_steps} is longer than the run (train.steps="
             f"{config.train.steps}); use at most train.steps, or 0 for no cooldown.")
    _validate_shapes(config)
    _validate_batch(config)
    _require(len(config.train.ema_half_lives_mimg) > 0 and min(config.train.ema_half_lives_mimg) > 0,
             f"train.ema_half_lives_mimg={config.train.ema_half_lives_mimg}; give at least one half-life > 0.")
    missing_teacher = spec.needs_teacher(config) and not config.scm.teacher_workdir
    _require(not missing_teacher or spec.phases,
             f"objective={config.objective!r} needs scm.teacher_workdir: the workdir of a finished diffusion run "
             "(--config.scm.teacher_workdir=runs/teacher).")
    _require(not missing_teacher,
             f"objective={config.objective!r} with pcm.distill needs scm.teacher_workdir (a finished diffusion run), "
             "or --config.pcm.distill=False for consistency training.")
    _require(config.scm.guidance_lo <= config.scm.guidance_hi,
             f"scm.guidance_lo={config.scm.guidance_lo} > scm.guidance_hi={config.scm.guidance_hi}; swap them.")
    _require(config.data.kind in ("pixels", "latents"), f"data.kind={config.data.kind!r}; use pixels or latents.")
    _validate_tangent_attention(config, spec.tangent)
    _require(config.pcm.adv_weight == 0 or spec.critic,
             f"pcm.adv_weight={config.pcm.adv_weight} is PCM's adversarial loss (objective=pcm); objective="
             f"{config.objective!r} has none: set pcm.adv_weight=0.")
    c = config.pcm.critic
    _require(config.pcm.adv_weight >= 0 and c.width > 0 and c.depth > 0 and c.lr > 0,
             f"pcm.adv_weight={config.pcm.adv_weight} must be >= 0 and pcm.critic width/depth/lr > 0, got {c}.")


def _validate_tangent_attention(config: ConfigDict, tangent: bool) -> None:
    """The sCM tangent pass runs jax.jvp through its attention kernel: cuDNN's (a custom_vjp) cannot."""
    kind = config.scm.tangent_attention
    _require(kind in TANGENT_KINDS, f"scm.tangent_attention={kind!r}; use one of {TANGENT_KINDS}.")
    _require(kind != "cudnn", "scm.tangent_attention='cudnn' cannot be forward-differentiated (a custom_vjp); "
             "use blockwise.")
    _require(not (kind == "same" and config.model.attention == "cudnn" and tangent),
             "model.attention='cudnn' cannot be forward-differentiated, so the tangent pass cannot share it; set "
             "--config.scm.tangent_attention=blockwise (a separate F^- pass).")


def _validate_shapes(config: ConfigDict) -> None:
    """The DiT's patches and heads (other families do not read these fields)."""
    m, d = config.model, config.data
    if m.name != "dit":
        return
    _require(d.image_size % m.patch_size == 0,
             f"data.image_size={d.image_size} is not divisible by model.patch_size={m.patch_size}.")
    _require(m.hidden_size % m.num_heads == 0,
             f"model.hidden_size={m.hidden_size} is not divisible by model.num_heads={m.num_heads}.")


def _validate_batch(config: ConfigDict) -> None:
    m = config.mesh
    data, fsdp, _ = mesh_shape(m.data, m.fsdp, m.tensor, jax.device_count(), m.dcn)
    _require(config.train.batch_size % (m.dcn * data * fsdp) == 0,
             f"train.batch_size={config.train.batch_size} is not divisible by the data-parallel size "
             f"dcn*data*fsdp={m.dcn * data * fsdp}; use a multiple of it.")
    _require(config.train.batch_size % jax.process_count() == 0,
             f"train.batch_size={config.train.batch_size} is not divisible by {jax.process_count()} processes.")


def validate_data(source, config: ConfigDict) -> None:
    """The data set's recorded shape, kind and class count against config.data, the teacher's data (distillation),
    then records spread over `source` spot-checked: finite values, labels in [0, num_classes).

    The loader checks dtype and shape of sets that record none (scm_jax.data.pipeline) and every batch's labels."""
    n, d = len(source), config.data
    info = getattr(source, "dataset_info", None)  # tfds sources record their features
    recorded = None if info is None else ArrayFeatures.from_tfds(info.features)
    if recorded is not None:
        _compare_recorded(recorded, d)
    _validate_teacher_data(config)
    for i in sorted({k * (n - 1) // (SPOT_CHECKS - 1) for k in range(SPOT_CHECKS)}):
        record = source[i]
        image = np.asarray(record["image"])
        if not np.isfinite(image).all():
            raise ValueError(f"data: record {i} of {d.name!r} holds non-finite values (NaN or inf); "
                             "clean the data set and rebuild it.")
        label = int(record.get("label", 0))
        if d.num_classes and not 0 <= label < d.num_classes:
            raise ValueError(f"data: record {i} of {d.name!r} has label {label}, outside [0, data.num_classes="
                             f"{d.num_classes}); set --config.data.num_classes to the set's number of classes.")


def _compare_recorded(recorded: ArrayFeatures, d: ConfigDict) -> None:
    """One line naming both values and the --config.data flag to change."""
    height, width, channels = recorded.shape
    if recorded.shape != (d.image_size, d.image_size, d.channels):
        raise ValueError(
            f"data: {d.name!r} holds {height}x{width}x{channels} images, the config {d.image_size}x{d.image_size}x"
            f"{d.channels} (data.image_size, data.channels); set --config.data.image_size={height} "
            f"--config.data.channels={channels}, or rebuild the set with python -m scm_jax.data.build "
            f"--resolution={d.image_size} --channels={d.channels} (image folders).")
    if recorded.kind != d.kind:
        raise ValueError(f"data: {d.name!r} holds {recorded.kind}, the config data.kind={d.kind!r}; set "
                         f"--config.data.kind={recorded.kind}.")
    if d.num_classes and recorded.num_classes != d.num_classes:
        held = f"{recorded.num_classes} classes" if recorded.num_classes else "no labels"
        raise ValueError(f"data: {d.name!r} has {held} (recorded when it was built), the config data.num_classes="
                         f"{d.num_classes}; set --config.data.num_classes={recorded.num_classes}.")


def _validate_teacher_data(config: ConfigDict) -> None:
    """A distilled teacher reads the student's batches: its config's data must have their shape and classes."""
    if not registry.spec(config).distills(config) or not config.scm.teacher_workdir:
        return
    d, t = config.data, runs.read_config(config.scm.teacher_workdir).data
    ours, theirs = (d.image_size, d.channels, d.num_classes), (t.image_size, t.channels, t.num_classes)
    if ours != theirs:
        raise ValueError(
            f"data: the teacher in {config.scm.teacher_workdir} was trained on {t.image_size}x{t.image_size}x"
            f"{t.channels} images with {t.num_classes} classes (the teacher's config.json), this run's data is "
            f"{d.image_size}x{d.image_size}x{d.channels} with {d.num_classes}; distil on the teacher's data: "
            f"--config.data.image_size={t.image_size} --config.data.channels={t.channels} "
            f"--config.data.num_classes={t.num_classes}.")


def validate_workdir(workdir: str) -> None:
    """A probe file written to `workdir`, or to its nearest existing parent while the run has not created it: a
    run that fails before its first checkpoint leaves no folder behind."""
    probe = os.path.join(_nearest_existing(workdir), f".write_probe_{os.getpid()}_{jax.process_index()}")
    try:
        with open(probe, "w") as fh:
            fh.write("ok")
        os.remove(probe)
    except OSError as e:
        raise PermissionError(f"workdir {workdir!r} is not writable ({e.strerror or e}); "
                              "point --workdir at a writable directory with free space.") from e


@contextlib.contextmanager
def removed_on_failed_start(workdir: str) -> Iterator[None]:
    """A local workdir this run creates is removed again if the run fails having written nothing but its config.json
    and empty folders, so a failed start leaves no debris; any log or checkpoint file keeps it."""
    created = "://" not in workdir and not os.path.exists(workdir)
    try:
        yield
    except BaseException:
        if created and jax.process_index() == 0 and _holds_only_config(workdir):
            shutil.rmtree(workdir, ignore_errors=True)
        raise


def _holds_only_config(workdir: str) -> bool:
    files = {os.path.relpath(os.path.join(root, name), workdir)
             for root, _, names in os.walk(workdir) for name in names}
    return files <= {runs.CONFIG_FILE}


def _nearest_existing(path: str) -> str:
    path = os.path.abspath(path)
    while not os.path.exists(path):
        path = os.path.dirname(path)
    return path


def validate_free_space(workdir: str, abstract_state: Any) -> None:
    """The workdir's disk must hold at least one more checkpoint of `abstract_state`."""
    need = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(abstract_state))
    free = shutil.disk_usage(_nearest_existing(workdir)).free
    if free < need:
        raise OSError(errno.ENOSPC, f"workdir {workdir!r} has {free / 2**20:.1f} MiB free but one checkpoint of "
                                    f"this run takes {need / 2**20:.1f} MiB; free space or use another --workdir.")
