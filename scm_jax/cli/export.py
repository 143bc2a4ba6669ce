"""scm-export: one weight set of a trained run -> a directory that scm_jax.load and scm-sample read.

    scm-export --workdir=runs/scd --weights=ema_0.05 --out=exported/ [--dtype=bfloat16] [--step=400]

Writes `out/config.json` (the run's config: network, data shape, formulation), `out/export.json` (source workdir,
step, weights, dtype) and `out/weights/` (the parameters as an Orbax PyTree, cast to --dtype): nothing of the
optimizer, the other EMAs or the data iterator. `out` must not exist. The source is only read (one weight set).
bfloat16 halves the file; loading casts it back to the run's dtype (float32 for EMAs), so its samples differ from
float32's in the last bits.
"""
from absl import flags, logging

from scm_jax.cli.common import run_app
from scm_jax.parallel.distributed import initialize
from scm_jax.train import runs

_WORKDIR = flags.DEFINE_string("workdir", None, "The scm-train workdir to export from.")
_WEIGHTS = flags.DEFINE_string("weights", None, "'params', 'ema' (the first EMA, default) or an EMA name (ema_0.5).")
_OUT = flags.DEFINE_string("out", None, "The new directory to write.")
_DTYPE = flags.DEFINE_enum("dtype", "float32", list(runs.EXPORT_DTYPES), "Dtype of the exported weights.")
_STEP = flags.DEFINE_integer("step", None, "Checkpoint step to export (default: the latest).")
flags.mark_flags_as_required(["workdir", "out"])


def main(argv) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}; options are --flag=value.")
    initialize()
    record = runs.export_weights(_WORKDIR.value, _WEIGHTS.value, _OUT.value, _DTYPE.value, _STEP.value)
    logging.info("exported %s step %d (%s, %s) -> %s", _WORKDIR.value, record["step"], record["weights"],
                 record["dtype"], _OUT.value)


def run() -> None:
    run_app(main)


if __name__ == "__main__":
    run()
