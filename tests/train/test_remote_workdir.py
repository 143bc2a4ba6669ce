"""A gs:// workdir goes through etils.epath for config.json, metrics.jsonl, TensorBoard events, sample grids and the
profile: no local directory named after the scheme. GCS is faked by fsspec's in-memory file system under "gs"; the
checkpoints (Orbax / TensorStore's own GCS driver) go to a local directory in this test."""
import json
import os

import fsspec
import pytest
from etils import epath
from etils.epath import backend
from fsspec.implementations.memory import MemoryFileSystem

from configs import embedded
from scm_jax.checkpoint import Checkpointer
from scm_jax.train import loop, runs
from scm_jax.train.log import Writer, is_remote

WORKDIR = "gs://bucket/runs/smoke"


class FakeGCS(MemoryFileSystem):
    protocol = ("gs", "gcs")
    store, pseudo_dirs = {}, [""]  # its own, apart from memory://


@pytest.fixture
def fake_gcs(tmp_path, monkeypatch):
    fsspec.register_implementation("gcs", FakeGCS, clobber=True)
    backend.fsspec_backend._get_filesystem.cache_clear()
    monkeypatch.chdir(tmp_path)  # a local "gs:" directory would appear here
    yield tmp_path
    FakeGCS.store.clear()
    backend.fsspec_backend._get_filesystem.cache_clear()


def test_is_remote():
    assert is_remote("gs://b/run") and is_remote("s3://b/run")
    assert not is_remote("runs/x") and not is_remote("/abs/gs://x") and not is_remote("gs:/b")


def test_writer_appends_across_sessions_on_storage_without_append(fake_gcs):
    for step in (1, 2):  # two sessions of a run: the second appends to the first's metrics
        with Writer(WORKDIR) as writer:
            writer.scalars(step, {"loss": float(step)})
    lines = (epath.Path(WORKDIR) / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["loss"] for line in lines] == [1.0, 2.0]
    assert (epath.Path(WORKDIR) / "tb").exists() and not os.path.exists(fake_gcs / "gs:")


def test_smoke_run_in_a_gs_workdir_writes_no_local_scheme_directory(fake_gcs, monkeypatch):
    checkpoints = str(fake_gcs / "checkpoints")
    monkeypatch.setattr(runs, "checkpointer", lambda config, workdir: Checkpointer(
        checkpoints, keep=config.checkpoint.keep, save_interval_steps=config.checkpoint.every_steps,
        async_save=False))
    config = embedded.get_config("diffusion,smoke")
    with config.unlocked():
        config.profile.update(start_step=1, num_steps=1)
    loop.train_and_evaluate(config, WORKDIR)
    remote = epath.Path(WORKDIR)
    assert runs.read_config(WORKDIR).train.steps == config.train.steps
    assert any("startup" in json.loads(line) for line in (remote / "metrics.jsonl").read_text().splitlines())
    assert list((remote / "tb").glob("events.*")) and (remote / "samples" / "heun_nfe35_0000006.png").exists()
    assert list((remote / "profile").glob("plugins/profile/*/*.xplane.pb"))
    assert sorted(os.listdir(fake_gcs)) == ["checkpoints"]  # nothing named gs: or bucket
