"""sCT and sCD train-step time / diffusion train-step time, same DiT, batch and mesh, measured in one run.

    python bench/step_ratio.py [--config_arg=sct] [--steps=20] [--batch=64]

Writes bench/results/step_ratio.{md,json}. The sCD teacher is a second DiT of the same size (random weights:
only its cost matters here).
"""
import argparse
import json
import os
import platform
import statistics
import time

import jax
import numpy as np

from configs import embedded
from scm_jax.parallel.mesh import make_mesh
from scm_jax.train.optim import make_optimizer
from scm_jax.train.state import make_setup, sharded_init
from scm_jax.train.step import make_train_step, model_apply

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def step_times(objective: str, batch: int, steps: int, teacher=None) -> tuple[list[float], object, dict]:
    config = embedded.get_config(objective)
    config.train.batch_size = batch
    setup = make_setup(config, make_mesh(-1, 1, 1), make_optimizer(config.optim))
    state = sharded_init(setup, jax.random.key(0))
    train_step = make_train_step(setup, config, teacher)
    rng = np.random.default_rng(0)
    data = {"image": rng.uniform(-1, 1, (batch, 32, 32, 1)).astype(np.float32),
            "label": rng.integers(0, 10, batch).astype(np.int32)}
    times = []
    for i in range(steps + 2):  # the first two include compilation
        start = time.perf_counter()
        state, metrics = train_step(state, data)
        jax.block_until_ready(metrics["loss"])
        times.append(time.perf_counter() - start)
    return times[2:], setup, state


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    diffusion, setup, state = step_times("diffusion", args.batch, args.steps)
    apply = model_apply(setup.graphdef, state["params"])
    teacher = lambda x, t, labels=None: apply(x, t, labels)[0]
    sct, _, _ = step_times("sct", args.batch, args.steps)
    scd, _, _ = step_times("scd", args.batch, args.steps, teacher)
    med = {k: statistics.median(v) for k, v in (("diffusion", diffusion), ("sct", sct), ("scd", scd))}
    result = {"machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, {jax.device_count()} jax devices",
              "model": "configs/embedded.py DiT (hidden 128, depth 4, patch 4, 32x32x1)", "batch": args.batch,
              "steps": args.steps, "median_step_s": med,
              "ratio_sct_over_diffusion": med["sct"] / med["diffusion"],
              "ratio_scd_over_diffusion": med["scd"] / med["diffusion"]}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "step_ratio.json"), "w") as fh:
        json.dump(result, fh, indent=2)
    table = (f"# Train-step time ratios\n\n{result['machine']}; {result['model']}; batch {args.batch}; median of "
             f"{args.steps} steps after compilation.\n\n| objective | median step (s) | / diffusion |\n|---|---|---|\n"
             + "".join(f"| {k} | {v:.4f} | {v / med['diffusion']:.2f} |\n" for k, v in med.items()))
    with open(os.path.join(RESULTS, "step_ratio.md"), "w") as fh:
        fh.write(table)
    print(table)


if __name__ == "__main__":
    main()
