"""scm_jax.load(...).sample(...): the README's lines against a smoke run and its export give scm-sample's bytes;
loading reads one weight set (bytes counted by TensorStore) and writes nothing, also in a read-only directory;
bad options are one clear error each."""
import json
import os
import shutil
import stat
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
import tensorstore as ts
from etils import epath

import scm_jax
from scm_jax import checkpoint, inference
from scm_jax.eval import decoding
from scm_jax.parallel.mesh import make_mesh
from scm_jax.train import runs
from scm_jax.train.optim import make_optimizer
from scm_jax.train.state import make_setup, sharded_init
from tests import fakes
from tests.cli.helpers import assert_one_line_error

STEP = 3
HALF_LIVES = (0.02, 0.05)


def make_run(workdir: str, objective: str = "sct", **overrides) -> str:
    """A smoke workdir (sCT unless told) with a step-3 checkpoint: fresh weights, EMAs moved off the parameters,
    non-zero Adam moments (no training needed to test loading and sampling)."""
    config = fakes.smoke(objective, **{"train.ema_half_lives_mimg": HALF_LIVES, **overrides})
    setup = make_setup(config, make_mesh(-1, 1, 1), make_optimizer(config))
    state = sharded_init(setup, jax.random.key(0))
    state["ema"] = {name: jax.tree.map(lambda p, i=i: p * (1.0 - 0.1 * i), ema)
                    for i, (name, ema) in enumerate(state["ema"].items(), 1)}
    state["opt_state"] = jax.tree.map(busy, state["opt_state"])  # fresh moments are zeros, which Orbax does not store
    ckpt = runs.checkpointer(config, workdir)
    ckpt.save(STEP, state, data_state=None, config_json=config.to_json(), force=True)
    ckpt.close()
    runs.write_config(config, workdir)
    return workdir


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    return make_run(str(tmp_path_factory.mktemp("inference")))


def busy(x: jax.Array) -> jax.Array:
    """Float arrays get incompressible, non-zero values."""
    if not jnp.issubdtype(x.dtype, jnp.floating):
        return x
    return x + jnp.sin(jnp.arange(x.size, dtype=x.dtype)).reshape(x.shape)


@pytest.fixture(scope="module")
def export(run, tmp_path_factory) -> str:
    """scm-export of the run's ema_0.02."""
    out = str(tmp_path_factory.mktemp("export") / "exported")
    done = subprocess.run([sys.executable, "-m", "scm_jax.cli.export", f"--workdir={run}", "--weights=ema_0.02",
                           f"--out={out}"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def scm_sample(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "scm_jax.cli.sample", *args], capture_output=True, text=True)


def test_readme_lines_on_a_run_and_its_export_equal_scm_sample(run, export, tmp_path):
    model = scm_jax.load(run)
    images = model.sample(16, steps=2, labels=7, seed=0)
    assert images.shape == (16, 32, 32, 1) and images.dtype == np.uint8 and model.weights == "ema_0.02"
    np.testing.assert_array_equal(scm_jax.load(export).sample(16, steps=2, labels=7, seed=0), images)
    for source in (run, export):
        done = scm_sample(f"--workdir={source}", "--num=16", "--steps=2", "--class_label=7", "--seed=0")
        assert done.returncode == 0, done.stderr[-3000:]
        out = os.path.join(source, "samples", "2step_16_step3_ema_0.02_seed0_class7")
        np.testing.assert_array_equal(np.load(out + ".npz")["arr_0"], images)
        record = json.loads(open(out + ".json").read())
        assert {k: record[k] for k in ("step", "weights", "seed", "labels", "batch", "times", "guidance")} == {
            "step": STEP, "weights": "ema_0.02", "seed": 0, "labels": 7, "batch": 16,
            "times": list(model.options(1).method.times), "guidance": None}
    again = scm_sample(f"--workdir={export}", "--num=16", "--steps=2", "--class_label=7", "--seed=0")
    lines = [line for line in again.stderr.splitlines() if line.startswith("error:")]
    assert again.returncode == 2 and len(lines) == 1 and "exists; pass --overwrite" in lines[0], again.stderr


def test_explicit_labels_equal_classes_in_turn(run):
    model = scm_jax.load(run)
    np.testing.assert_array_equal(model.sample(12, labels=[i % 10 for i in range(12)], seed=1),
                                  model.sample(12, seed=1))


def snapshot(directory: str) -> dict:
    return {os.path.relpath(os.path.join(root, name), directory): (os.stat(os.path.join(root, name)).st_mtime_ns,
                                                                    os.stat(os.path.join(root, name)).st_size)
            for root, dirs, files in os.walk(directory) for name in dirs + files}


def tensorstore_bytes(kind: str) -> int:
    metrics = ts.experimental_collect_matching_metrics(f"/tensorstore/kvstore/file/bytes_{kind}")
    return sum(v["value"] for m in metrics for v in m["values"])


def test_loading_a_read_only_run_writes_nothing_and_leaves_an_unreadable_step_in_place(run, tmp_path):
    """Loading reads one weight set, skips a newer unreadable step (no metadata) without moving it, and neither
    creates, renames nor touches a file: listing and mtimes are unchanged and TensorStore wrote 0 bytes (as root,
    chmod does not stop writes, so these are the checks that bite)."""
    source = str(tmp_path / "run")
    shutil.copytree(run, source)
    broken = os.path.join(source, runs.CHECKPOINT_DIR, str(STEP + 1))
    shutil.copytree(os.path.join(source, runs.CHECKPOINT_DIR, str(STEP)), broken)
    os.remove(os.path.join(broken, "state", "_METADATA"))
    modes = {path: os.stat(os.path.join(source, path)).st_mode for path in snapshot(source)}
    for path in sorted(modes, reverse=True):
        os.chmod(os.path.join(source, path), modes[path] & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    before, written = snapshot(source), tensorstore_bytes("written")
    try:
        model = inference.load(source, "ema_0.05")
        assert tensorstore_bytes("written") == written and snapshot(source) == before
    finally:
        for path in sorted(modes):
            os.chmod(os.path.join(source, path), modes[path])
    assert model.step == STEP and model.weights == "ema_0.05"
    expected = inference.load(run, 0.05).params
    jax.tree.map(np.testing.assert_array_equal, model.params, expected)


def test_one_ema_reads_its_bytes_not_the_state(tmp_path):
    """Bytes read (TensorStore's file metric) for one EMA, the parameters and the whole train state of one step, on
    a wider smoke U-Net (3.0M parameters; Orbax compresses the arrays, so a set reads a little under its bytes): each
    array also reads its zarr metadata and the OCDBT b-tree node of its key, about 9 KiB per array."""
    run = make_run(str(tmp_path), **{"model.channels": 64})
    config = runs.read_config(run)
    setup = make_setup(config, make_mesh(-1, 1, 1), make_optimizer(config))
    state_dir = os.path.join(run, runs.CHECKPOINT_DIR, str(STEP), "state")
    read = {}
    for name, path in (("ema", ("ema", "ema_0.02")), ("params", ("params",)), ("state", ())):
        abstract = setup.abstract
        for key in path:
            abstract = abstract[key]
        start = tensorstore_bytes("read")
        checkpoint.read_subtree(state_dir, abstract, path)
        read[name] = tensorstore_bytes("read") - start
    one_set = sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(setup.abstract["params"]))
    print(f"bytes read: {read} (one weight set holds {one_set} bytes, the state "
          f"{sum(a.size * a.dtype.itemsize for a in jax.tree.leaves(setup.abstract))})")
    assert 0.8 * one_set < read["ema"] < 1.1 * one_set and abs(read["ema"] - read["params"]) < 0.01 * one_set
    assert read["state"] > 4.5 * read["ema"]  # params, Adam's two moments, two EMAs


def test_export_holds_one_weight_set_in_its_dtype(run, export, tmp_path):
    assert set(os.listdir(export)) - {"samples"} == {"config.json", "export.json", "weights"}  # + scm-sample's
    record = json.loads(open(os.path.join(export, runs.EXPORT_FILE)).read())
    assert record == {"source": os.path.abspath(run), "step": STEP, "weights": "ema_0.02", "dtype": "float32"}
    half = str(tmp_path / "bf16")
    runs.export_weights(run, "params", half, dtype="bfloat16")
    saved = ocp.PyTreeCheckpointHandler().metadata(epath.Path(half) / runs.EXPORT_WEIGHTS_DIR).tree
    assert {str(leaf.dtype) for leaf in jax.tree.leaves(saved)} == {"bfloat16"}
    model, full = scm_jax.load(half), scm_jax.load(run, "params")
    assert model.weights == "params" and model.step == STEP
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-2, atol=1e-6), model.params, full.params)
    with pytest.raises(FileExistsError, match="exists; export into a new directory"):
        runs.export_weights(run, None, half)
    with pytest.raises(ValueError, match="is an export of ema_0.02 only"):
        scm_jax.load(export, "params")


@pytest.mark.parametrize("options, message", [
    ({"solver": "heun"}, "is a consistency model; sample it with steps"),
    ({"guidance": 2.0}, "this sct run has no guidance"),
    ({"num": 0}, "num=0: ask for at least one sample"),
    ({"labels": 10}, "label 10 but the run has 10 classes"),
    ({"labels": [1, 2]}, "2 labels for 4 samples"),
    ({"steps": 3}, "use 1 or 2, or times"),
])
def test_bad_options_are_one_clear_error(run, options, message):
    model = scm_jax.load(run)
    with pytest.raises(ValueError, match=message):
        model.options(**{"num": 4, **options})


def test_a_latent_run_without_a_vae_is_refused_in_one_line(tmp_path):
    """Neither --vae nor a VAE in the run's config: one line naming --vae, before any weights are read (this run has
    none) and without writing a file. Decoding with a VAE: tests/cli/test_latent_loop.py."""
    runs.write_config(fakes.smoke("sct", **{"data.kind": "latents"}), str(tmp_path))
    with pytest.raises(decoding.MissingVAE, match="names no VAE to decode them; pass --vae=WEIGHTS"):
        scm_jax.load(str(tmp_path))
    done = scm_sample(f"--workdir={tmp_path}", "--num=4")
    assert_one_line_error(done.returncode, done.stderr, "names no VAE to decode them; pass --vae=WEIGHTS")
    assert os.listdir(tmp_path) == [runs.CONFIG_FILE]


def test_a_vae_for_a_pixel_run_is_refused(run):
    with pytest.raises(ValueError, match="this run samples pixels .*nothing to decode; drop it"):
        scm_jax.load(run, vae="sd_vae.npz")


def test_weights_shard_on_the_given_mesh(run):
    model = scm_jax.load(run, mesh=make_mesh(2, 4, 1))
    leaves = jax.tree.leaves(model.params)
    assert model.setup.mesh.shape["fsdp"] == 4
    assert any(leaf.sharding.shard_shape(leaf.shape) != leaf.shape for leaf in leaves)


def test_guided_student_samples_at_its_distillation_scale(tmp_path):
    """The embedded sCD student is distilled at a fixed CFG scale (1.25); sampling it defaults to that scale, not
    to an input it never saw in training."""
    model = scm_jax.load(make_run(str(tmp_path), "scd", **{"scm.guidance_lo": 1.25, "scm.guidance_hi": 1.25}))
    assert model.options(4).guidance == 1.25
    assert model.options(4, guidance=1.0).guidance == 1.0


@pytest.mark.parametrize("solver, nfe, N", [("euler", 1, 1), ("euler", 4, 4), ("heun", 3, 2), ("heun", 35, 18)])
def test_ode_steps_of_each_solver(solver, nfe, N):
    """Euler at NFE 1 is one step from t_max to 0 (the baselines bench's 1-step teacher row); Heun needs N >= 2."""
    assert inference.ode_steps(solver, nfe) == N


@pytest.mark.parametrize("solver, nfe", [("euler", 0), ("heun", 1), ("heun", 4), ("rk4", 3)])
def test_ode_steps_refuse_what_no_solver_runs(solver, nfe):
    with pytest.raises(ValueError, match="use heun with an odd nfe >= 3 or euler with nfe >= 1"):
        inference.ode_steps(solver, nfe)
