"""The README's main job: teacher -> sCT -> sCD on the embedded MNIST-5k, then sample and evaluate, on CPU.

    python -m scm_jax.examples.embedded_job --workdir=runs/main [--teacher_steps=2000 --student_steps=1000]

Runs the real binaries one after another (scm-train x3, scm-sample, scm-evaluate) and prints a table of the
offline metric (Fréchet distance in the shipped MNIST classifier's feature space, class accuracy) and img/s for
the teacher's Heun ODE at several NFE and sCT / sCD at 1 and 2 steps, with a floor row of real digits (drawn
from the reference set itself, so its FD is optimistic). Both students start from the teacher's weights (sCT only
uses them as its initialisation, ECT-style; its loss never calls the teacher). Rerunning resumes every stage.
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

from scm_jax.data import embedded

def binary(module: str, *args: str) -> None:
    cmd = [sys.executable, "-m", f"scm_jax.cli.{module}", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def config_path() -> str:
    import configs
    return os.path.join(os.path.dirname(configs.__file__), "embedded.py")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="runs/main")
    parser.add_argument("--teacher_steps", type=int, default=1200)
    parser.add_argument("--student_steps", type=int, default=400)
    parser.add_argument("--num_samples", type=int, default=1000)
    parser.add_argument("--ode_steps", default="3,5,10,18", help="Heun noise levels (NFE = 2N - 1)")
    args = parser.parse_args()
    w = lambda name: os.path.join(args.workdir, name)
    cfg = config_path()
    binary("train", f"--config={cfg}:diffusion", f"--workdir={w('teacher')}",
           f"--config.train.steps={args.teacher_steps}")
    for objective in ("sct", "scd"):
        binary("train", f"--config={cfg}:{objective}", f"--workdir={w(objective)}",
               f"--config.train.steps={args.student_steps}", f"--config.scm.teacher_workdir={w('teacher')}",
               f"--config.scm.warmup_steps={args.student_steps // 4}")
    rows = []
    for N in map(int, args.ode_steps.split(",")):
        rows.append(("teacher", f"heun_nfe{2 * N - 1}", ["--solver=heun", f"--ode_steps={N}"]))
    for run in ("sct", "scd"):
        rows += [(run, "1step", ["--steps=1"]), (run, "2step", ["--steps=2"])]
    results = [evaluate_real_digits(w("data"), args.num_samples)]
    for run, method, flags in rows:
        npz = os.path.join(w(run), "samples", f"eval_{method}.npz")
        binary("sample", f"--workdir={w(run)}", f"--num={args.num_samples}", f"--out={npz}", *flags)
        report = os.path.join(w(run), "samples", f"eval_{method}.metrics.json")
        binary("evaluate", f"--samples={npz}", "--metric=mnist", f"--out={report}")
        with open(npz[:-4] + ".json") as fh, open(report) as fr:  # sampling record + metrics
            results.append({"run": run, "method": method, **json.load(fh), **json.load(fr)})
    table = format_table(results)
    with open(os.path.join(args.workdir, "results.md"), "w") as fh:
        fh.write(table)
    print(table)


def evaluate_real_digits(out_dir: str, num: int) -> dict:
    """The metric's floor: `num` real digits (a fixed random subset) through scm-evaluate."""
    os.makedirs(out_dir, exist_ok=True)
    images, labels = embedded.load_mnist5k()
    pick = np.random.default_rng(0).choice(len(images), num, replace=False)
    npz, report = os.path.join(out_dir, "real.npz"), os.path.join(out_dir, "real.metrics.json")
    np.savez(npz, arr_0=images[pick], arr_1=labels[pick])
    binary("evaluate", f"--samples={npz}", "--metric=mnist", f"--out={report}")
    with open(report) as fh:
        return {"run": "data", "method": "real digits", "nfe": 0, "img_per_s": float("nan"), **json.load(fh)}


def format_table(results: list[dict]) -> str:
    head = "| run | sampler | NFE | FD (MNIST features) | accuracy | img/s |\n|---|---|---|---|---|---|\n"
    return head + "".join(f"| {r['run']} | {r['method']} | {r['nfe']} | {r['fd']:.2f} | {r['accuracy']:.3f} | "
                          f"{r['img_per_s']:.1f} |\n" for r in results)


if __name__ == "__main__":
    main()
