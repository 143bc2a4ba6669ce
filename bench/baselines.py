"""sCM against its lineage on the embedded data: equal image budget, same network, same sampler / evaluator binaries.

    python bench/baselines.py --teacher=runs/main/teacher --workdir=runs/baselines [--steps=1600 --batch=16]

Every student trains `--steps` x `--batch` images (default: the main job's sCT / sCD budget) of configs/embedded.py
(the main job's U-Net and each objective's other defaults) with
scm.teacher_workdir=--teacher: cd, ect, pcm, pscm and scd distil or start from it, and sct starts from it (as in
the main job); ct and ict train from scratch. Each run is sampled at 1, 2 (t_mid 1.3) and 4 steps (phased runs: their M
phases) by scm-sample and scored by scm-evaluate --metric=mnist; the table adds the median train-step time from
the run's metrics.jsonl. Runs go side by side, one CPU device each, as many at a time as the process has cores
(under `taskset -c 0` one after another, so that the step times are single-core ones). A finished run in the
workdir is not retrained (e.g. the main job's sct and scd, copied there), only sampled. The "diffusion" rows are
the teacher itself (not retrained) solving the probability-flow ODE with Euler at NFE 1, 2 and 4. Results:
<workdir>/results.md and bench/results/baselines.md.
"""
import argparse
import json
import os
import platform

import numpy as np

from configs import embedded

from scm_jax.examples.embedded_job import (command, config_path, real_digits, run_all, sample_and_score, score,
                                           usable_cores)
from scm_jax.formulations.trigflow import T_MAX
from scm_jax.samplers.consistency import T_MID

OBJECTIVES = ("diffusion", "sct", "scd", "cd", "ct", "ict", "ect", "pcm", "pscm")
PHASED = ("pcm", "pscm")
# Every student at the same times: 2 steps at the embedded sCM students' t_mid (1.3, ablations §8), 4 at sCM's.
T_MID_2 = embedded.get_config("sct").sample.t_mid
SAMPLERS = {1: ["--steps=1"], 2: [f"--times={T_MAX},{T_MID_2}"], 4: [f"--times={T_MAX},{T_MID},0.8,0.4"]}
ODE_SAMPLERS = {n: ["--solver=euler", f"--ode_steps={n}"] for n in (1, 2, 4)}  # the teacher: Euler NFE n


def train(objective: str, workdir: str, args) -> list:
    return [command("train", f"--config={config_path()}:{objective}", f"--workdir={workdir}",
                    f"--config.train.steps={args.steps}", f"--config.train.batch_size={args.batch}",
                    f"--config.scm.teacher_workdir={args.teacher}",
                    f"--config.scm.warmup_steps={args.steps // 4}", f"--config.checkpoint.every_steps={args.steps}",
                    devices=1)]


def teacher_images(workdir: str) -> str:
    with open(os.path.join(workdir, "config.json")) as fh:
        train = json.load(fh)["train"]
    return f"{train['steps']} steps x {train['batch_size']}"


def median_step_time(workdir: str) -> float:
    with open(os.path.join(workdir, "metrics.jsonl")) as fh:
        times = [r["step_time_s"] for r in map(json.loads, fh) if "step_time_s" in r]
    return float(np.median(times[1:] or times))  # the first window holds the compilation


def read_json(path: str) -> dict:
    with open(path) as fh:
        return json.load(fh)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="workdir of a finished diffusion run (the main job's)")
    parser.add_argument("--workdir", default="runs/baselines")
    budget = embedded.get_config("scd").train  # the main job's student budget
    parser.add_argument("--steps", type=int, default=budget.steps)
    parser.add_argument("--batch", type=int, default=budget.batch_size)
    parser.add_argument("--num_samples", type=int, default=1000)
    parser.add_argument("--objectives", default=",".join(OBJECTIVES))
    args = parser.parse_args()
    real = real_digits(os.path.join(args.workdir, "data"), args.num_samples)
    jobs, plan = [[score(real)]], []
    for objective in args.objectives.split(","):
        workdir = checkpoint = os.path.join(args.workdir, objective)
        job = []
        if objective == "diffusion":
            checkpoint, samplers = args.teacher, ODE_SAMPLERS
        else:
            job += train(objective, workdir, args)
            samplers = {0: []} if objective in PHASED else SAMPLERS  # phased runs sample edge to edge
        for nfe, flags in samplers.items():
            npz = os.path.join(workdir, "samples", f"bench_{nfe}.npz")
            job += sample_and_score(checkpoint, npz, flags, args.num_samples)
            plan.append((objective, checkpoint, npz))
        jobs.append(job)
    run_all(jobs, usable_cores())
    rows = [{"run": "data", "nfe": 0, **read_json(real[:-4] + ".metrics.json")}]
    step_times = {checkpoint: median_step_time(checkpoint) for _, checkpoint, _ in plan}
    rows += [{"run": objective, **read_json(npz[:-4] + ".json"), **read_json(npz[:-4] + ".metrics.json"),
              "step_time_s": step_times[checkpoint]} for objective, checkpoint, npz in plan]
    table = format_table(rows, args)
    for path in (os.path.join(args.workdir, "results.md"), os.path.join(os.path.dirname(__file__), "results",
                                                                       "baselines.md")):
        with open(path, "w") as fh:
            fh.write(table)
    print(table)


def format_table(rows: list[dict], args) -> str:
    host = " ".join(filter(None, (platform.machine(), platform.processor())))
    cores = usable_cores()
    head = (f"# Baselines on the embedded data\n\n{host}, {cores} core{'s' * (cores > 1)}; "
            f"{args.steps} steps x {args.batch} images per student; teacher {args.teacher} "
            f"({teacher_images(args.teacher)} images); "
            f"{args.num_samples} samples per row. Train step: median over the logging windows after the first "
            f"(which holds the compilation); a run of one window (steps <= 50) includes it. Every row samples the "
            "run's EMA (half-life 0.02 Mimg capped by EDM's ramp-up, configs/embedded.py).\n\n"
            "| run | NFE | FD | accuracy | train step (s) |\n|---|---|---|---|---|\n")
    return head + "".join(f"| {r['run']} | {r['nfe']} | {r['fd']:.2f} | {r['accuracy']:.3f} | "
                          f"{r.get('step_time_s', float('nan')):.3f} |\n" for r in rows)


if __name__ == "__main__":
    main()
