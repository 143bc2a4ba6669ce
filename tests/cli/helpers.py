"""Shared by the binaries' tests: smoke configs with the periodic evaluation on, and the one-line error check."""
from ml_collections import ConfigDict

from tests import fakes

EVAL = {"every_steps": 3, "num_samples": 16, "batch_size": 8}


def smoke(objective: str, **eval_overrides) -> ConfigDict:
    return fakes.smoke(objective, **{f"eval.{k}": v for k, v in {**EVAL, **eval_overrides}.items()})


def assert_one_line_error(rc: int, err: str, message: str) -> None:
    """Exit code 2 (cli.common.run_app) and the message on one `error:` line, no traceback."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert rc == 2 and len(lines) == 1 and message in lines[0] and "Traceback" not in err, err
