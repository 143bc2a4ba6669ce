"""train_and_evaluate(config, workdir): the whole training job, resumable by rerunning the same command.

data -> sharded state (restored if the workdir has a checkpoint) -> jitted steps -> logs, sample grids,
checkpoints. SIGTERM / SIGINT save the current step and return; non-finite updates are skipped and counted.
Grids, TensorBoard images and evaluation see decoded images (scm_jax.eval.decoding): a latent run without a VAE
skips them with one warning. A latent run's config.json records the set's latent scale and VAE (with_latent_record).
The workdir is a local directory or any etils.epath URL (gs://bucket/run). At start-up the run reports its
platform, mesh, batch split and XLA's FLOPs per step (scm_jax.train.report); every `train.log_every` steps it logs
the window's metrics with img/s, step time and MFU of the train steps alone (scm_jax.train.progress).
"""
import contextlib
import dataclasses
import functools
import json
import os
import tempfile
import time
from typing import Callable, Optional

import jax
import jax.numpy as jnp
from absl import logging
from etils import epath
from ml_collections import ConfigDict

from scm_jax.data import latents
from scm_jax.data.pipeline import make_loader
from scm_jax.data.sources import DataOptions, open_source
from scm_jax.eval import decoding
from scm_jax.eval.periodic import default_methods, make_sample_eval
from scm_jax.models.registry import model_apply
from scm_jax.objectives import registry
from scm_jax.parallel import sharding
from scm_jax.parallel.batch import BatchSplit, batch_devices, split_batch
from scm_jax.parallel.mesh import mesh_from_config
from scm_jax.samplers import generate
from scm_jax.samplers.images import save_grid
from scm_jax.train import compilation, progress, runs
from scm_jax.train.log import Writer, is_remote, logged, window_means
from scm_jax.train.optim import learning_rate, make_optimizer, moved_cooldown
from scm_jax.train.preemption import Preemption
from scm_jax.train.profile import Profiler
from scm_jax.train.report import format_report, startup_report
from scm_jax.train.state import Setup, make_setup, sharded_init
from scm_jax.train.step import make_train_step
from scm_jax.train.validate import validate_config, validate_data, validate_free_space, validate_workdir


@dataclasses.dataclass
class Session:
    """What the steps of one session of a run use besides the state."""
    config: ConfigDict
    setup: Setup
    split: BatchSplit
    train_step: Callable
    loader: object
    ckpt: runs.Checkpointer
    writer: Writer
    workdir: str
    preempted: Preemption
    profiler: Profiler
    evaluate: Optional[Callable]
    grids: dict
    decode: Optional[decoding.Decoder]
    cache_dir: Optional[str]


def train_and_evaluate(config: ConfigDict, workdir: str) -> dict:
    """Trains `config` in `workdir`; returns the final state."""
    validate_config(config)
    cache_dir = compilation.enable_cache(config.train.compile_cache_dir, workdir)  # before the first compilation
    local = not is_remote(workdir)  # validate.py's workdir checks use the local file system
    if local:
        validate_workdir(workdir)
    mesh = mesh_from_config(config.mesh)
    split = split_batch(config.train.batch_size, config.train.microbatch, config.train.grad_accum_steps,
                        batch_devices(mesh))
    logging.info("batch: %s", split)
    setup = make_setup(config, mesh, make_optimizer(config))
    if local:
        validate_free_space(workdir, setup.abstract)
    loader = data_loader(config)
    config = with_latent_record(config)
    decode, make_apply = sample_decoder(config), functools.partial(model_apply, setup.graphdef)
    evaluate = None if decode is None else make_sample_eval(  # checks its files before any training
        config, make_apply, mesh, setup.model_cfg.guidance_embed, decode)
    grids = {} if decode is None else make_grid_samplers(config, setup)
    teacher_fn, teacher_params = load_teacher(config, mesh)
    ckpt = runs.checkpointer(config, workdir)
    restored = ckpt.restore(setup.abstract)
    if restored is None:
        state = sharded_init(setup, jax.random.key(config.seed))
        if teacher_params is not None and config.scm.init_from_teacher:
            state = start_from(state, teacher_params, setup)
        logging.info("initialised a new run in %s", workdir)
    else:
        start, state, data_state, saved_config = restored
        loader.set_state(data_state)
        logging.info("resumed %s at step %d", workdir, start)
        if warning := moved_cooldown(config, json.loads(saved_config) or {}, start):
            logging.warning(warning)
    runs.write_config(config, workdir)
    train_step = make_train_step(setup, with_accumulation(config, split), teacher_fn)
    with Writer(workdir) as writer, Preemption() as preempted, Profiler(config.profile, workdir) as profiler:
        state = run_steps(Session(config, setup, split, train_step, loader, ckpt, writer, workdir, preempted,
                                  profiler, evaluate, grids, decode, cache_dir), state)
    ckpt.wait()
    ckpt.close()
    return state


def with_accumulation(config: ConfigDict, split: BatchSplit) -> ConfigDict:
    """`config` with train.grad_accum_steps the split's (the train step reads it); config.json keeps the user's."""
    resolved = config.copy_and_resolve_references()
    resolved.train.grad_accum_steps = split.accum_steps
    return resolved


def run_steps(s: Session, state: dict) -> dict:
    config = s.config
    step, total, bad_run = int(state["step"]), config.train.steps, 0
    first, window, timer, flops = step, [], progress.StepTimer(), None
    tangent = progress.TangentWatch.of(config.objective, config.scm.warmup_steps,
                                       history=logged(s.workdir, "jvp_rms", step))
    device_kind = jax.devices()[0].device_kind
    batch_sharding = jax.sharding.NamedSharding(s.setup.mesh, jax.sharding.PartitionSpec(sharding.BATCH))
    while step < total:
        local = next(s.loader)
        batch = {k: jax.make_array_from_process_local_data(batch_sharding, v) for k, v in local.items()}
        s.profiler.before_step(step)
        if step == first:
            flops = compilation.step_flops(s.train_step, state, batch, s.split.accum_steps)
            state, metrics = first_step(s, state, batch, flops)
            timer.restart()  # the throughput windows leave out the compilation
        else:
            state, metrics = s.train_step(state, batch)
            timer.count()
        step += 1
        s.profiler.after_step(step, state["step"])
        window.append(metrics)
        if step % config.train.log_every == 0 or step == total:
            window = jax.device_get(window)
            finite = [bool(m.pop("finite")) for m in window]
            skipped = finite.count(False)
            trailing = next((i for i, ok in enumerate(reversed(finite)) if ok), None)  # bad steps at the end
            bad_run = bad_run + len(finite) if trailing is None else trailing
            summary = window_means(window)
            summary.update(lr=learning_rate(config, step), skipped_steps=skipped,
                           **throughput(timer, s.split, flops, device_kind))
            s.writer.scalars(step, summary)
            eta = progress.eta((total - step) * summary["step_time_s"]) if "step_time_s" in summary else "-"
            logging.info("step %d/%d  %s  eta %s", step, total, _fmt(summary), eta)
            if tangent and (warning := tangent.check(step, summary)):
                logging.warning(warning)
            if bad_run >= config.train.max_bad_steps:
                raise FloatingPointError(
                    f"{bad_run} consecutive steps up to {step} had a non-finite loss or gradient; updates were "
                    f"skipped, the last good checkpoint is step {s.ckpt.latest_step()}. Lower optim.lr, enable "
                    "optim.grad_clip or check the data.")
            window = []
            timer.restart()
        if after_step(s, state, step, timer):
            logging.warning("preempted: saved step %d; rerun the same command to resume.", step)
            break
    logging.info("finished %d steps (%d this session)", step, step - first)
    return state


def first_step(s: Session, state: dict, batch: dict, flops: Optional[float]) -> tuple[dict, dict]:
    """The session's first step, compiling (or loading from the cache) the train step; then the start-up report."""
    hits, t0 = compilation.cache_hits(), time.perf_counter()
    state, metrics = s.train_step(state, batch)
    jax.block_until_ready(state["step"])
    fields = startup_report(s.config, s.setup.mesh, s.split, state["params"], flops, s.cache_dir,
                            time.perf_counter() - t0, compilation.cache_hits() - hits)
    logging.info("start-up report:\n%s", format_report(fields))
    s.writer.report(int(state["step"]), "startup", fields)
    return state, metrics


def throughput(timer: progress.StepTimer, split: BatchSplit, flops: Optional[float],
               device_kind: str) -> dict[str, float]:
    """img/s (global), step time and MFU of the window's timed steps; {} when it has none (only the first)."""
    if not timer.steps:
        return {}
    step_time = timer.seconds() / timer.steps
    out = {"img_per_s": split.global_batch / step_time, "step_time_s": step_time}
    mfu = progress.mfu(flops, step_time, device_kind)
    return out if mfu is None else {**out, "mfu": mfu}


def after_step(s: Session, state: dict, step: int, timer: progress.StepTimer) -> bool:
    """Sample grids, evaluation and checkpoint due after `step`, outside the timed steps; True when preempted
    (the step is saved)."""
    config, total = s.config, s.config.train.steps
    sample = config.sample.every_steps and (step % config.sample.every_steps == 0 or step == total)
    evaluate = s.evaluate is not None and (step % config.eval.every_steps == 0 or step == total)
    stop = s.preempted.reached(step)
    force = stop or step == total
    busy = sample or evaluate or force or step % config.checkpoint.every_steps == 0
    with timer.exclude(state["step"]) if busy else contextlib.nullcontext():
        if sample:
            write_samples(s.grids, s.decode, config, state, s.writer, s.workdir, step)
        if evaluate:
            scores = s.evaluate(next(iter(state["ema"].values())))
            s.writer.scalars(step, scores)
            logging.info("eval at step %d  %s", step, _fmt(scores))
        s.ckpt.save(step, state, data_state=s.loader.get_state(), config_json=config.to_json(), force=force)
    return stop


def data_options(config: ConfigDict) -> DataOptions:
    d = config.data
    return DataOptions(name=d.name, data_dir=d.data_dir or None, split=d.split, kind=d.kind)


def data_loader(config: ConfigDict):
    d = config.data
    source = open_source(data_options(config))
    validate_data(source, config)
    return make_loader(source, global_batch_size=config.train.batch_size, process_index=jax.process_index(),
                       process_count=jax.process_count(), seed=config.seed, kind=d.kind,
                       image_shape=(d.image_size, d.image_size, d.channels))


def with_latent_record(config: ConfigDict) -> ConfigDict:
    """A latent run's config with what decoding its samples needs, from its data set's metadata: the scale the
    loader applies (data.latent_mean / latent_std) and, unless set, the VAE the set was encoded with (data.vae).
    config.json, checkpoints and exports carry them."""
    if config.data.kind != "latents":
        return config
    source = open_source(data_options(config))
    config = config.copy_and_resolve_references()
    config.data.update(latents.recorded_scale(source).metadata())
    config.data.vae = config.data.vae or latents.recorded_vae(source) or ""
    return config


def sample_decoder(config: ConfigDict) -> Optional[decoding.Decoder]:
    """The decoder of the run's grids and evaluation; None when both are off or, with one warning, for a latent run
    without a VAE."""
    if not (config.sample.every_steps or config.eval.every_steps > 0):
        return None
    try:
        return decoding.decoder(config)
    except decoding.MissingVAE as e:
        logging.warning("%s Sample grids, TensorBoard images and periodic evaluation are skipped.", e)
        return None


def load_teacher(config: ConfigDict, mesh):
    """The diffusion run in scm.teacher_workdir: (F for sCD's loss or None, weights to start from or None).

    sCD and CD always need it (and start from it), ECT starts from it; sCT uses it only to initialise the student
    (ECT-style fine-tuning) when scm.teacher_workdir is set and scm.init_from_teacher is on.
    """
    spec = registry.spec(config)
    if not spec.loads_teacher(config):
        return None, None
    t_config, t_setup, t_params, t_step = runs.load_weights(config.scm.teacher_workdir, config.scm.teacher_weights,
                                                            mesh)
    if registry.spec(t_config) is not registry.DIFFUSION:
        raise ValueError(f"the teacher in {config.scm.teacher_workdir} was trained with objective "
                         f"{t_config.objective!r}; {config.objective} starts from a diffusion run.")
    logging.info("teacher: %s step %d (%s)", config.scm.teacher_workdir, t_step, config.scm.teacher_weights)
    if not spec.distills(config):  # ECT (and sCT) only start from the weights
        return None, t_params
    apply = model_apply(t_setup.graphdef, t_params)
    return (lambda x, t, labels=None: apply(x, t, labels)[0]), t_params


def start_from(state: dict, teacher_params: dict, setup: Setup) -> dict:
    """Student initialised from the teacher: copy every parameter the student shares with it (same path and shape)."""
    flat_t = dict(jax.tree_util.tree_flatten_with_path(teacher_params)[0])

    def pick(path, p):
        t = flat_t.get(path)
        return p if t is None or t.shape != p.shape else t.astype(p.dtype)

    def fresh(state):  # one jit so every leaf gets its own (donatable) buffer in the target sharding
        params = jax.tree_util.tree_map_with_path(pick, state["params"])
        f32 = lambda: jax.tree.map(lambda p: p.astype(jnp.float32), params)
        return {**state, "params": params, "opt_state": setup.tx.init(params),
                "ema": {name: f32() for name in state["ema"]}, **({"target": f32()} if "target" in state else {})}
    return jax.jit(fresh, out_shardings=setup.shardings)(state)


def make_grid_samplers(config: ConfigDict, setup: Setup) -> dict:
    """Method name -> jitted sample(params, seed, i) for the `sample.num` grid, built once: the weights are an
    argument, so every grid of the run reuses one compilation (and no checkpoint is baked in as a constant)."""
    d, n = config.data, config.sample.num
    devices = batch_devices(setup.mesh)
    if config.sample.every_steps and n % devices:
        raise ValueError(f"config: sample.num={n} must be a multiple of the {devices} data-parallel devices "
                         "(the grid is sampled sharded); or set sample.every_steps=0.")
    batches = generate.Batches(n, (d.image_size, d.image_size, d.channels), d.num_classes,
                               guidance=config.scm.guidance_hi if setup.model_cfg.guidance_embed else None)
    make_apply = functools.partial(model_apply, setup.graphdef)
    return {m.name: generate.batch_sampler(make_apply, m, batches, setup.mesh)
            for m in default_methods(config)}


def write_samples(grids: dict, decode: decoding.Decoder, config: ConfigDict, state: dict, writer, workdir: str,
                  step: int) -> None:
    """Grids from the first EMA, decoded: 1- and 2-step for consistency models, Heun (NFE 35) for diffusion."""
    params, n = next(iter(state["ema"].values())), config.sample.num
    for name, sample in grids.items():
        images, _ = generate.sample_many(sample, params, n, n, config.seed + 1, decode=decode)
        writer.images(step, f"samples/{name}", images)
        if jax.process_index() == 0:
            save_png(epath.Path(workdir) / "samples" / f"{name}_{step:07d}.png", images)


def save_png(path: epath.Path, images) -> None:
    """The grid written locally, then copied to `path` (any epath location)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        local = os.path.join(tmp, path.name)
        save_grid(local, images)
        epath.Path(local).copy(path, overwrite=True)


def _fmt(summary: dict) -> str:
    return "  ".join(f"{k}={float(v):.4g}" for k, v in sorted(summary.items()))
