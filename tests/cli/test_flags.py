"""Every binary's --help lists its own flags; flag and config mistakes are one `error:` line, exit 2, no workdir."""
import os
import subprocess

import pytest

from scm_jax.cli import common
from tests.cli.helpers import assert_one_line_error

BINARIES = ("scm-train", "scm-sample", "scm-evaluate", "scm-plan")
OWN_FLAG = {"scm-train": "--workdir", "scm-sample": "--checkpoint", "scm-evaluate": "--samples",
            "scm-plan": "--hbm_gib"}


def test_help_lists_each_binarys_own_flags(tmp_path):
    runs = {b: subprocess.Popen([b, "--help"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True) for b in BINARIES}
    for binary, process in runs.items():
        out, _ = process.communicate(timeout=900)  # four jax imports at once: minutes on a loaded 2-core machine
        assert OWN_FLAG[binary] in out and binary in out, (binary, out)


@pytest.mark.parametrize("args, message", [
    (["--config=embedded:sct,smoke", "--config.train.stepz=3"],
     "--config.train.stepz: config.train has no key 'stepz'. Did you mean \"steps\" (--config.train.steps=3)?"),
    (["--config=configs/embedded.py:sct,smoke", "--config.trian.steps=3"], "(--config.train.steps=3)"),
    (["--config=configs/embedded.py:sct,smok"], "config arg 'sct,smok': use one of"),
    (["--config=configs/nope.py"], "configs/nope.py is neither a file nor a shipped config"),
    (["--config=embedded:sct", "--config.train.steps=many"], "--config.train.steps=many"),
])
def test_config_mistakes_are_one_line_from_any_directory(tmp_path, args, message):
    """Run outside the repository: configs/... and shipped names resolve to the installed configs package."""
    out = subprocess.run(["scm-train", f"--workdir={tmp_path / 'run'}", *args], cwd=tmp_path, capture_output=True,
                         text=True, timeout=900)  # minutes when a loaded machine starves it
    assert_one_line_error(out.returncode, out.stderr, message)
    assert not (tmp_path / "run").exists()


def test_config_names_resolve_to_the_shipped_files(tmp_path, monkeypatch):
    shipped = os.path.join(common.configs_dir(), "embedded.py")
    monkeypatch.chdir(tmp_path)
    assert common.resolve_config("embedded:sct,smoke") == shipped + ":sct,smoke"
    assert common.resolve_config("configs/embedded.py:sct") == shipped + ":sct"
    assert common.resolve_config(shipped) == shipped
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "embedded.py").write_text("def get_config(): ...\n")  # a local file wins
    assert common.resolve_config("configs/embedded.py:sct") == "configs/embedded.py:sct"
    assert "base" not in common.shipped_configs() and "imagenet512" in common.shipped_configs()
    with pytest.raises(FileNotFoundError, match=r"--config=cifar:sct: cifar is neither .*'cifar10'"):
        common.resolve_config("cifar:sct")


def test_traceback_on_request(tmp_path):
    out = subprocess.run(["scm-train", "--config=embedded:sct,smoke", "--config.train.stepz=3", "--workdir=run"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=900,
                         env=dict(os.environ, **{common.TRACEBACK_ENV: "1"}))
    assert out.returncode == 2 and "Traceback" in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("error: --config.train.stepz:")
