"""Two tiny finished runs shared by the binaries' tests: a diffusion teacher and sCT, both with the periodic
evaluation on (so the trainer's metric logging is tested by the same runs the samplers read)."""
import pytest

from scm_jax.samplers import generate
from scm_jax.train.loop import train_and_evaluate
from tests.cli.helpers import smoke


@pytest.fixture(scope="session")
def trained_runs(tmp_path_factory):
    """(runs/ holding teacher/ and sct/, the (method, batch) of every sampler trace while they trained)."""
    root = tmp_path_factory.mktemp("runs")
    traced, sampler = [], generate.sampler
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(generate, "sampler", lambda apply, method, shape: traced.append((method.name, shape[0]))
                      or sampler(apply, method, shape))
        train_and_evaluate(smoke("diffusion", every_steps=6, ode_steps=3), str(root / "teacher"))
        train_and_evaluate(smoke("sct"), str(root / "sct"))
    return root, traced


@pytest.fixture(scope="session")
def runs_dir(trained_runs):
    return trained_runs[0]


@pytest.fixture(scope="session")
def sampler_traces(trained_runs):
    return trained_runs[1]
