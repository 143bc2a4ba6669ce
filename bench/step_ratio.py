"""sCT and sCD train-step time / diffusion train-step time, same DiT, batch and mesh, measured in one run.

    python bench/step_ratio.py [--config_arg=sct] [--steps=20] [--batch=64]

Writes bench/results/step_ratio.{md,json}. The sCD teacher is a second DiT of the same size (random weights:
only its cost matters here). sct / scd run the default shared pass (scm.tangent_attention="same": one jax.jvp of
the student gives F_theta, F^- and the tangent); the "two-pass" rows run F^- as its own pass with the same kernel.
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
from scm_jax.models.registry import model_apply
from scm_jax.train.step import make_train_step

RESULTS = os.path.join(os.path.dirname(__file__), "results")


def compiled_step(objective: str, batch: int, teacher=None, tangent_attention: str = "same"):
    """(compiled train step, its state, a batch, XLA's flop count) for `objective` on the embedded DiT."""
    config = embedded.get_config(objective)
    config.train.batch_size = batch
    config.scm.tangent_attention = tangent_attention
    setup = make_setup(config, make_mesh(-1, 1, 1), make_optimizer(config))
    state = sharded_init(setup, jax.random.key(0))
    rng = np.random.default_rng(0)
    data = {"image": rng.uniform(-1, 1, (batch, 32, 32, 1)).astype(np.float32),
            "label": rng.integers(0, 10, batch).astype(np.int32)}
    compiled = make_train_step(setup, config, teacher).lower(state, data).compile()
    return compiled, state, data, compiled.cost_analysis()["flops"], setup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    diffusion = compiled_step("diffusion", args.batch)
    setup, params = diffusion[4], diffusion[1]["params"]
    teacher = lambda x, t, labels=None: model_apply(setup.graphdef, params)(x, t, labels)[0]
    kernel = embedded.get_config("sct").model.attention  # the two-pass rows' F^- kernel: the student's own
    runs = {"diffusion": diffusion,
            "sct": compiled_step("sct", args.batch),
            "scd": compiled_step("scd", args.batch, teacher),
            "sct (two-pass)": compiled_step("sct", args.batch, None, kernel),
            "scd (two-pass)": compiled_step("scd", args.batch, teacher, kernel)}
    states = {k: r[1] for k, r in runs.items()}
    times = {k: [] for k in runs}
    for i in range(args.steps + 1):  # round robin, so load drift hits every objective alike; step 0 is warm-up
        for k, (compiled, _, data, _, _) in runs.items():
            start = time.perf_counter()
            states[k], metrics = compiled(states[k], data)
            jax.block_until_ready(metrics["loss"])
            if i:
                times[k].append(time.perf_counter() - start)
    med = {k: statistics.median(v) for k, v in times.items()}
    flops = {k: r[3] for k, r in runs.items()}
    result = {"machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, {jax.device_count()} jax devices",
              "model": "configs/embedded.py DiT (hidden 128, depth 4, patch 4, 32x32x1)", "batch": args.batch,
              "steps": args.steps, "median_step_s": med, "xla_flops": flops,
              "ratio_sct_over_diffusion": med["sct"] / med["diffusion"],
              "ratio_scd_over_diffusion": med["scd"] / med["diffusion"]}
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "step_ratio.json"), "w") as fh:
        json.dump(result, fh, indent=2)
    table = (f"# Train-step time ratios\n\n{result['machine']}; {result['model']}; batch {args.batch}; median of "
             f"{args.steps} steps per objective after compilation, run round robin. Goal (issue 5): sCT and sCD "
             "<= 1.3x diffusion. FLOPs: XLA's count for the compiled step. sCD's floor: diffusion is forward + "
             "backward (~3 forward units); sCD adds the tangent (~1) and the teacher's forward (~1), ~5/3 = 1.67x "
             "in FLOPs.\n\n"
             "| objective | median step (s) | time / diffusion | FLOPs / diffusion |\n|---|---|---|---|\n"
             + "".join(f"| {k} | {v:.4f} | {v / med['diffusion']:.2f} | {flops[k] / flops['diffusion']:.2f} |\n"
                       for k, v in med.items()))
    with open(os.path.join(RESULTS, "step_ratio.md"), "w") as fh:
        fh.write(table)
    print(table)


if __name__ == "__main__":
    main()
