"""The README's main job: teacher -> sCT + sCD on the embedded MNIST-5k, then sample and evaluate, on CPU.

    python -m scm_jax.examples.embedded_job --workdir=runs/main [--teacher_steps=3000]

Runs the real binaries (scm-train x3, scm-sample, scm-evaluate) and prints a table of the offline metric (Fréchet
distance in the shipped MNIST classifier's feature space, class accuracy) and img/s for the teacher's Heun ODE at
several NFE and sCT / sCD at 1 and 2 steps, with a floor row of real digits (drawn from the reference set itself,
so its FD is optimistic), each row linking an 8x8 grid of its first samples. Both students start from the
teacher's weights (sCT only uses them as its initialisation, ECT-style; its loss never calls the teacher).
Rerunning resumes every stage.

Using the cores: a small network does not keep several XLA:CPU threads busy, so the teacher trains data-parallel
over one CPU device per core (the same global batch; 0.92 -> 0.68 s per step on 2 cores), and the two students
run side by side, one device each, each sampled as soon as it is trained; the teacher's rows take the first free core.
"""
import argparse
import concurrent.futures
import json
import math
import os
import shutil
import subprocess
import sys

import numpy as np

from scm_jax.data import embedded


def command(module: str, *args: str, devices: int) -> tuple[list[str], dict]:
    """A binary's command line and its environment with `devices` CPU devices (XLA_FLAGS; other platforms ignore it)."""
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count={devices}".strip()
    return [sys.executable, "-m", f"scm_jax.cli.{module}", *args], {**os.environ, "XLA_FLAGS": flags}


def run_all(jobs: list[list[tuple[list[str], dict]]], parallel: int) -> None:
    """Runs the jobs, up to `parallel` at a time, each a list of commands run in turn; raises on a failed one."""
    with concurrent.futures.ThreadPoolExecutor(max(1, parallel)) as pool:
        for future in [pool.submit(_in_turn, job) for job in jobs]:
            future.result()


def _in_turn(job: list[tuple[list[str], dict]]) -> None:
    for cmd, env in job:
        print("+", " ".join(cmd), flush=True)
        subprocess.run(cmd, env=env, check=True)


def usable_cores() -> int:
    """The cores this process may run on (its affinity mask, e.g. under taskset), not all the machine's."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def config_path() -> str:
    import configs
    return os.path.join(os.path.dirname(configs.__file__), "embedded.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/main")
    parser.add_argument("--teacher_steps", type=int, default=1200)
    parser.add_argument("--student_steps", type=int, default=1600,
                        help="steps of batch 16 for sCT and sCD (bench/results/ablations.md §11)")
    parser.add_argument("--num_samples", type=int, default=1000)
    parser.add_argument("--ode_steps", default="5,10", help="Heun noise levels (NFE = 2N - 1)")
    parser.add_argument("--cfg_scale", type=float, default=1.25,
                        help="one more teacher row, Heun at the last --ode_steps with this classifier-free guidance")
    args = parser.parse_args()
    w = lambda name: os.path.join(args.workdir, name)
    cfg, cores = config_path(), usable_cores()
    run_all([[command("train", f"--config={cfg}:diffusion", f"--workdir={w('teacher')}",
                      f"--config.train.steps={args.teacher_steps}", devices=math.gcd(cores, 64))]], 1)
    levels = [int(n) for n in args.ode_steps.split(",")]
    rows = [("teacher", f"heun_nfe{2 * N - 1}", ["--solver=heun", f"--ode_steps={N}"]) for N in levels]
    N = levels[-1]
    rows.append(("teacher", f"heun_nfe{2 * N - 1}_cfg{args.cfg_scale:g}",
                 ["--solver=heun", f"--ode_steps={N}", f"--cfg_scale={args.cfg_scale}"]))
    students = ("sct", "scd")  # a guided sCD student samples at the scale it was distilled with (its default)
    rows += [(run, f"{n}step", [f"--steps={n}"]) for run in students for n in (1, 2)]
    out = lambda run, method, ext: os.path.join(w(run), "samples", f"eval_{method}{ext}")
    job = lambda run, method, flags: sample_and_score(w(run), out(run, method, ".npz"), flags, args.num_samples)
    train = lambda run: command("train", f"--config={cfg}:{run}", f"--workdir={w(run)}",
                                f"--config.train.steps={args.student_steps}",
                                f"--config.scm.teacher_workdir={w('teacher')}",
                                f"--config.scm.warmup_steps={args.student_steps // 4}", devices=1)
    real = real_digits(w("data"), args.num_samples)
    # Each student is sampled right after it trains; the teacher's rows take the first free core.
    run_all([[train(run)] + sum((job(*row) for row in rows if row[0] == run), []) for run in students]
            + [[score(real)]] + [job(*row) for row in rows if row[0] == "teacher"], cores)
    with open(real[:-4] + ".metrics.json") as fh:
        results = [{"run": "data", "method": "real digits", "nfe": 0, "img_per_s": float("nan"), **json.load(fh)}]
    os.makedirs(w("grids"), exist_ok=True)
    for run, method, _ in rows:
        shutil.copy(out(run, method, ".png"), w(os.path.join("grids", f"{run}_{method}.png")))  # first 64 samples
        with open(out(run, method, ".json")) as fh, open(out(run, method, ".metrics.json")) as fr:
            results.append({**json.load(fh), **json.load(fr), "run": run, "method": method})  # record + metrics
    table = format_table(results)
    with open(os.path.join(args.workdir, "results.md"), "w") as fh:
        fh.write(table)
    print(table)


def score(npz: str) -> tuple[list[str], dict]:
    """scm-evaluate --metric=mnist of the samples in `npz` -> <npz stem>.metrics.json."""
    return command("evaluate", f"--samples={npz}", "--metric=mnist", f"--out={npz[:-4]}.metrics.json", devices=1)


def sample_and_score(checkpoint: str, npz: str, flags: list[str], num: int) -> list[tuple[list[str], dict]]:
    """scm-sample `num` samples of `checkpoint` with `flags` to `npz` (a rerun resamples: the run may have trained
    on), then `score` them."""
    return [command("sample", f"--workdir={checkpoint}", f"--num={num}", "--overwrite", f"--out={npz}", *flags,
                    devices=1), score(npz)]


def real_digits(out_dir: str, num: int) -> str:
    """The metric's floor: `num` real digits (a fixed random subset) as an ADM .npz; returns its path."""
    os.makedirs(out_dir, exist_ok=True)
    images, labels = embedded.load_mnist5k()
    pick = np.random.default_rng(0).choice(len(images), num, replace=False)
    npz = os.path.join(out_dir, "real.npz")
    np.savez(npz, arr_0=images[pick], arr_1=labels[pick])
    return npz


def format_table(results: list[dict]) -> str:
    """The results table; each sampled row links its 8x8 grid of the first 64 samples (classes 0..9 in turn)."""
    head = ("| run | sampler | NFE | FD (MNIST features) | accuracy | img/s | samples |\n"
            "|---|---|---|---|---|---|---|\n")
    grid = lambda r: "" if r["run"] == "data" else f"[grid](grids/{r['run']}_{r['method']}.png)"
    return head + "".join(f"| {r['run']} | {r['method']} | {r['nfe']} | {r['fd']:.2f} | {r['accuracy']:.3f} | "
                          f"{r['img_per_s']:.1f} | {grid(r)} |\n" for r in results)


if __name__ == "__main__":
    main()
