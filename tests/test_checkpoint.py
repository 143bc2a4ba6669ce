"""Checkpointer: resharding round trip, retention, corrupt and half-written steps, clear errors."""

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P, SingleDeviceSharding

from scm_jax.checkpoint import CORRUPT_SUBDIR, Checkpointer

REPO = Path(__file__).resolve().parents[1]
CONFIG = json.dumps({"model": {"width": 8}, "lr": 1e-3})
SUBPROCESS_ENV = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))


def _mesh(shape: tuple[int, ...], names: tuple[str, ...]) -> jax.sharding.Mesh:
    devices = jax.devices()[: int(np.prod(shape))]
    return jax.make_mesh(shape, names, axis_types=(jax.sharding.AxisType.Auto,) * len(shape), devices=devices)


def _train_state() -> dict:
    """Params and an optimizer moment sharded over a 4x2 mesh, plus step, RNG key data and scalars."""
    mesh = _mesh((4, 2), ("data", "model"))
    w = jnp.arange(32.0).reshape(8, 4)
    return {
        "params": {
            "w": jax.device_put(w, NamedSharding(mesh, P("data", "model"))),
            "b": jax.device_put(jnp.arange(4.0), NamedSharding(mesh, P("model"))),
        },
        "opt": (jax.device_put(-w, NamedSharding(mesh, P("data", "model"))), {"count": jnp.int32(7)}),
        "step": jnp.int32(100),
        "rng": jax.random.key_data(jax.random.key(3)),
        "ema_decay": np.float32(0.999),
        "epoch": 2,
    }


def _on_device0(x) -> jax.sharding.Sharding:
    return SingleDeviceSharding(jax.devices()[0])


def _abstract(state, sharding_of: Callable = _on_device0):
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), jnp.result_type(x), sharding=sharding_of(x)), state
    )


def _assert_tree_equal(a, b) -> None:
    jax.tree.map(lambda x, y: np.testing.assert_array_equal(np.asarray(x), np.asarray(y)), a, b)


def _save(ckpt: Checkpointer, step: int, state, data_state=None) -> None:
    assert ckpt.save(step, state, data_state=data_state, config_json=CONFIG, force=True)


def test_round_trip_reshards_onto_smaller_meshes(tmp_path):
    state = _train_state()
    ckpt = Checkpointer(tmp_path, keep=3, save_interval_steps=1)
    _save(ckpt, 100, state, data_state={"epoch": 2, "positions": [1, 2, 3]})
    ckpt.close()

    mesh2 = _mesh((2,), ("data",))
    on_two_devices = lambda x: NamedSharding(mesh2, P("data") if np.ndim(x) else P())  # noqa: E731
    for sharding_of in (on_two_devices, _on_device0):
        abstract = _abstract(state, sharding_of)
        restored = Checkpointer(tmp_path, keep=3, save_interval_steps=1).restore(abstract)
        step, restored_state, data_state, config_json = restored
        assert step == 100
        _assert_tree_equal(restored_state, state)
        for r, a in zip(jax.tree.leaves(restored_state), jax.tree.leaves(abstract)):
            assert r.sharding.is_equivalent_to(a.sharding, r.ndim)
        assert data_state == {"epoch": 2, "positions": [1, 2, 3]}
        assert json.loads(config_json) == json.loads(CONFIG)


@pytest.mark.parametrize("data_state", [b"\x00grain-state\xff", None])
def test_bytes_and_none_data_state_round_trip(tmp_path, data_state):
    state = {"w": jnp.ones((2, 2))}
    ckpt = Checkpointer(tmp_path, keep=1, save_interval_steps=1, async_save=False)
    _save(ckpt, 0, state, data_state=data_state)
    assert ckpt.restore(_abstract(state))[2] == data_state


def test_relative_directory_saves_and_restores(tmp_path, monkeypatch):
    """`scm-train --workdir=runs/main` (the README's main job) gives the checkpointer a relative path."""
    monkeypatch.chdir(tmp_path)
    state = {"w": jnp.ones((2, 2))}
    ckpt = Checkpointer("runs/main/checkpoints", keep=1, save_interval_steps=1, async_save=False)
    _save(ckpt, 0, state)
    assert (tmp_path / "runs/main/checkpoints/0").is_dir()
    assert ckpt.restore(_abstract(state))[0] == 0


def test_keeps_latest_k_at_save_interval(tmp_path):
    state = {"w": jnp.ones((2, 2))}
    ckpt = Checkpointer(tmp_path, keep=2, save_interval_steps=2)
    saved = [ckpt.save(s, state, data_state=None, config_json=CONFIG) for s in range(7)]
    ckpt.close()
    assert saved == [True, False, True, False, True, False, True]
    assert ckpt.all_steps() == [4, 6] and ckpt.latest_step() == 6
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["4", "6"]


def _array_files(step_dir: Path) -> list[Path]:
    """OCDBT data files of the "state" item (tiny arrays live inline in B-tree nodes, hence 64x64)."""
    return [f for f in (step_dir / "state").rglob("*") if f.is_file() and f.parent.name == "d"]


def _garble_largest(files: list[Path]) -> None:
    max(files, key=lambda f: f.stat().st_size).write_bytes(b"junk")


CORRUPTIONS = {
    "truncated array files": lambda d: [f.write_bytes(f.read_bytes()[:10]) for f in _array_files(d)],
    "garbage array chunk": lambda d: _garble_largest(_array_files(d)),
    "garbage tree metadata": lambda d: (d / "state" / "_METADATA").write_text("{not json"),
    "garbage data-iterator json": lambda d: (d / "data" / "metadata").write_text("{not json"),
    "missing item": lambda d: shutil.rmtree(d / "config"),
}


@pytest.mark.parametrize("corrupt", CORRUPTIONS.values(), ids=CORRUPTIONS.keys())
def test_corrupt_latest_falls_back_and_moves_it_aside(tmp_path, caplog, corrupt):
    state = {"w": jnp.arange(4096.0).reshape(64, 64)}
    ckpt = Checkpointer(tmp_path, keep=3, save_interval_steps=1, async_save=False)
    _save(ckpt, 1, state, data_state={"pos": 1})
    _save(ckpt, 2, jax.tree.map(lambda x: x + 1, state), data_state={"pos": 2})
    corrupt(tmp_path / "2")

    with caplog.at_level(logging.WARNING, logger="scm_jax.checkpoint"):
        step, restored, data_state, _ = ckpt.restore(_abstract(state))
    assert (step, data_state) == (1, {"pos": 1})
    _assert_tree_equal(restored, state)
    assert "step 2" in caplog.text and "cannot be restored" in caplog.text and "not deleted" in caplog.text
    (moved,) = (tmp_path / CORRUPT_SUBDIR).iterdir()
    assert moved.name.startswith("2-") and not (tmp_path / "2").exists()
    assert ckpt.all_steps() == [1]

    _save(ckpt, 2, state)  # Training goes on and saves step 2 again.
    assert ckpt.restore(_abstract(state))[0] == 2


def test_no_readable_step_raises_listing_tries_and_keeps_files(tmp_path):
    state = {"w": jnp.ones((4, 4))}
    ckpt = Checkpointer(tmp_path, keep=3, save_interval_steps=1, async_save=False)
    _save(ckpt, 5, state)
    (tmp_path / "5" / "state" / "_METADATA").write_text("{not json")
    with pytest.raises(RuntimeError, match=r"No restorable checkpoint.*Tried step 5: JSONDecodeError"):
        ckpt.restore(_abstract(state))
    assert (tmp_path / "5").exists() and not (tmp_path / CORRUPT_SUBDIR).exists()


def test_shape_mismatch_names_parameter_and_both_shapes(tmp_path):
    state = _train_state()
    ckpt = Checkpointer(tmp_path, keep=3, save_interval_steps=1, async_save=False)
    _save(ckpt, 1, state)
    abstract = _abstract(state)
    abstract["params"]["w"] = jax.ShapeDtypeStruct((8, 16), jnp.float32, sharding=_on_device0(None))
    expected = r"params/w: checkpoint has shape \(8, 4\) float32, the model expects \(8, 16\).*another arch"
    with pytest.raises(ValueError, match=expected):
        ckpt.restore(abstract)
    assert ckpt.all_steps() == [1]  # A config error, not corruption: nothing is moved.


def test_missing_directory_restores_nothing(tmp_path):
    ckpt = Checkpointer(tmp_path / "new" / "run", keep=1, save_interval_steps=1)
    assert ckpt.restore(_abstract({"w": jnp.ones(2)})) is None
    assert ckpt.latest_step() is None and ckpt.all_steps() == []


def test_unwritable_directory_fails_at_construction(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("")  # A path under a regular file cannot be created, even as root.
    with pytest.raises(PermissionError, match="not writable"):
        Checkpointer(blocker / "ckpt", keep=1, save_interval_steps=1)


_KILLED_MID_SAVE = """
import os, sys
import jax.numpy as jnp
from scm_jax.checkpoint import Checkpointer
directory = sys.argv[1]
ckpt = Checkpointer(directory, keep=3, save_interval_steps=1)
state = {"w": jnp.ones((2048, 2048))}
ckpt.save(1, state, data_state=None, config_json="{}")
ckpt.wait()
ckpt.save(2, state, data_state=None, config_json="{}")
while not any(os.path.exists(os.path.join(directory, name)) for name in ("2.orbax-checkpoint-tmp", "2")):
    pass  # Orbax creates the tmp dir asynchronously: die as soon as it exists.
os._exit(0)
"""


def test_interrupted_async_save_is_ignored(tmp_path):
    command = [sys.executable, "-c", _KILLED_MID_SAVE, str(tmp_path)]
    subprocess.run(command, env=SUBPROCESS_ENV, check=True, timeout=120)
    assert (tmp_path / "2.orbax-checkpoint-tmp").is_dir() and not (tmp_path / "2").exists()

    ckpt = Checkpointer(tmp_path, keep=3, save_interval_steps=1)
    assert ckpt.all_steps() == [1]
    state = {"w": jnp.ones((2048, 2048))}
    assert ckpt.restore(_abstract(state))[0] == 1
    _save(ckpt, 2, state)  # Orbax replaces the stale tmp dir.
    ckpt.wait()
    assert ckpt.restore(_abstract(state))[0] == 2 and not (tmp_path / "2.orbax-checkpoint-tmp").exists()


_ONE_OF_TWO_HOSTS = """
import glob, os, sys
process_id, port, directory = int(sys.argv[1]), sys.argv[2], sys.argv[3]
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
import jax
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec as P
from scm_jax.checkpoint import Checkpointer

mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
sharding = NamedSharding(mesh, P("data", "model"))
w = np.arange(4096.0, dtype=np.float32).reshape(64, 64)
ckpt = Checkpointer(directory, keep=3, save_interval_steps=1)
for step in (1, 2):
    w_step = jax.make_array_from_callback(w.shape, sharding, lambda index: (w + step)[index])
    ckpt.save(step, {"w": w_step}, data_state={"step": step}, config_json="{}")
ckpt.wait()
if process_id == 0:  # Lose process 1's shards of step 2: only process 1 fails to read them.
    for f in glob.glob(f"{directory}/2/state/ocdbt.process_1/d/*"):
        open(f, "wb").write(b"junk")
multihost_utils.sync_global_devices("corrupted")
step, state, data_state, _ = ckpt.restore({"w": jax.ShapeDtypeStruct(w.shape, np.float32, sharding=sharding)})
full = multihost_utils.process_allgather(state["w"], tiled=True)
print("RESULT", step, data_state, np.array_equal(full, w + 1), ckpt.all_steps(), flush=True)
ckpt.close()
"""


def test_two_processes_fall_back_together_when_one_cannot_read(tmp_path):
    """A read failure on one host only must not leave the hosts in mismatched collectives."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _ONE_OF_TWO_HOSTS, str(i), str(port), str(tmp_path)],
            env=SUBPROCESS_ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=120)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, out in zip(procs, outputs):
        assert p.returncode == 0 and "RESULT 1 {'step': 1} True [1]" in out, out[-3000:]
    assert [d.name.split("-")[0] for d in (tmp_path / CORRUPT_SUBDIR).iterdir()] == ["2"]
