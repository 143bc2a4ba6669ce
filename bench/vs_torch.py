"""scm_jax's compiled train step vs the same DiT in PyTorch: diffusion and sCT steps timed in alternation.

    python bench/vs_torch.py [--rounds=15] [--cpus=1 --cpus=0,1] [--profile]

The DiT: width 256, depth 4, 4 heads, patch 4, 32x32x1, 10 classes, batch 64 (scm_jax/models/dit.py with the
embedded config's optimizer: Adam + clip 1.0, one EMA). The PyTorch twin below mirrors it layer for layer
(positional time embedding, class embedding, adaptive double normalisation with pixel-normed scale / shift and
zero-initialised gates, tanh-GELU MLP, zero-initialised final projection, the w_phi(t) logvar head); the bench
copies scm_jax's initial weights into it and checks that both networks give the same F and logvar before timing.

scm_jax runs its real trainer step (`scm_jax.train.step.make_train_step`, compiled, donated state) for
`objective=diffusion` and `objective=sct`. PyTorch runs the TrigFlow diffusion loss (forward, backward, clip, Adam,
EMA) and sCT as the sCM / FastGen reference does: `torch.func.jvp` of the network under no_grad for F^- and
dF^-/dt (math attention: torch's CPU flash attention has no forward-mode rule), then the student's forward and
backward (flash attention). Each `--cpus` set runs in its own process pinned with taskset (XLA sizes its thread
pool from the affinity at start); torch gets torch.set_num_threads(len(cpus)). Inside a process the four steps
run round robin, so load drift hits every step alike; medians over `--rounds`.

`--profile` also writes XLA's per-op profile of both compiled steps (jax.profiler trace, one-thread process):
time per HLO op category, top ops. Writes bench/results/vs_torch.{md,json}.
"""
import argparse
import collections
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WIDTH, DEPTH, HEADS, PATCH, SIZE, CHANNELS, CLASSES = 256, 4, 4, 4, 32, 1, 10
SIGMA_D, P_MEAN, P_STD = 0.5, -1.0, 1.4


# ------------------------------------------------------------------------------------------------------------
# scm_jax side: the trainer's own compiled step.

def jax_config(objective: str, batch: int):
    from configs import embedded
    config = embedded.get_config(objective)
    config.model.update(name="dit", hidden_size=WIDTH, depth=DEPTH, num_heads=HEADS, patch_size=PATCH)
    config.train.batch_size = batch
    return config


def jax_step(objective: str, batch: int):
    """(compiled step, state, batch, setup) of scm_jax's trainer for `objective` on the bench DiT."""
    import jax
    import numpy as np
    from scm_jax.parallel.mesh import make_mesh
    from scm_jax.train.optim import make_optimizer
    from scm_jax.train.state import make_setup, sharded_init
    from scm_jax.train.step import make_train_step
    config = jax_config(objective, batch)
    setup = make_setup(config, make_mesh(-1, 1, 1), make_optimizer(config))
    state = sharded_init(setup, jax.random.key(0))
    rng = np.random.default_rng(0)
    data = {"image": rng.uniform(-1, 1, (batch, SIZE, SIZE, CHANNELS)).astype(np.float32),
            "label": rng.integers(0, CLASSES, batch).astype(np.int32)}
    compiled = make_train_step(setup, config).lower(state, data).compile()
    return compiled, state, data, setup


# ------------------------------------------------------------------------------------------------------------
# PyTorch side: the same DiT.

def torch_modules():
    import torch
    import torch.nn.functional as Fn
    from torch import nn

    def positional(c, dim):  # [cos(c w), sin(c w)], w_i = 1e4^(-i / (dim/2))   (embeddings.positional_embedding)
        half = dim // 2
        w = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=torch.float32) / half)
        arg = c[:, None] * w[None]
        return torch.cat([torch.cos(arg), torch.sin(arg)], -1)

    def pixel_norm(x, eps=1e-6):
        return x * torch.rsqrt(x.square().mean(-1, keepdim=True) + eps)

    def modulate(x, scale, shift):  # LayerNorm without affine, then pnorm'd scale / shift
        return Fn.layer_norm(x, x.shape[-1:], eps=1e-6) * scale[:, None] + shift[:, None]

    def sincos_2d(grid, dim):
        import numpy as np
        from scm_jax.models.embeddings import sincos_2d as jax_sincos
        return torch.from_numpy(np.asarray(jax_sincos(grid, dim)))

    class Modulation(nn.Module):
        def __init__(self, n, gates):
            super().__init__()
            self.n = n
            self.scale_shift = nn.Linear(WIDTH, 2 * n * WIDTH)
            self.gates = nn.Linear(WIDTH, n * WIDTH) if gates else None

        def forward(self, c):
            c = Fn.silu(c)
            ss = pixel_norm(self.scale_shift(c).view(-1, 2 * self.n, WIDTH))
            g = None if self.gates is None else self.gates(c).view(-1, self.n, WIDTH)
            return ss, g

    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv = nn.Linear(WIDTH, 3 * WIDTH)  # fused q, k, v (the DiT / timm layout)
            self.out = nn.Linear(WIDTH, WIDTH)
            self.math = False  # True inside torch.func.jvp: flash attention has no forward-mode rule on CPU

        def forward(self, x):
            b, n, _ = x.shape
            q, k, v = self.qkv(x).view(b, n, 3, HEADS, WIDTH // HEADS).permute(2, 0, 3, 1, 4)
            if self.math:
                s = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
                y = s.softmax(-1) @ v
            else:
                y = Fn.scaled_dot_product_attention(q, k, v)
            return self.out(y.transpose(1, 2).reshape(b, n, WIDTH))

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.modulation = Modulation(2, gates=True)
            self.attn = Attention()
            self.fc1, self.fc2 = nn.Linear(WIDTH, 4 * WIDTH), nn.Linear(4 * WIDTH, WIDTH)

        def forward(self, x, c):
            ss, g = self.modulation(c)
            x = x + g[:, None, 0] * self.attn(modulate(x, ss[:, 0], ss[:, 1]))
            h = Fn.gelu(self.fc1(modulate(x, ss[:, 2], ss[:, 3])), approximate="tanh")
            return x + g[:, None, 1] * self.fc2(h)

    class ScalarEmbedder(nn.Module):
        def __init__(self, freq, out):
            super().__init__()
            self.freq = freq
            self.fc1, self.fc2 = nn.Linear(freq, out), nn.Linear(out, out)

        def forward(self, c):
            return self.fc2(Fn.silu(self.fc1(positional(c, self.freq))))

    class DiT(nn.Module):
        def __init__(self, time_scale: float):
            super().__init__()
            self.time_scale, self.grid = time_scale, SIZE // PATCH
            self.patch_embed = nn.Linear(PATCH * PATCH * CHANNELS, WIDTH)
            self.register_buffer("pos", sincos_2d(self.grid, WIDTH))
            self.t_embed = ScalarEmbedder(256, WIDTH)
            self.y_embed = nn.Embedding(CLASSES + 1, WIDTH)
            self.blocks = nn.ModuleList([Block() for _ in range(DEPTH)])
            self.final_mod = Modulation(1, gates=False)
            self.final = nn.Linear(WIDTH, PATCH * PATCH * CHANNELS)
            self.logvar = ScalarEmbedder(128, 128)
            self.logvar.fc2 = nn.Linear(128, 1)

        def set_math_attention(self, on: bool):
            for blk in self.blocks:
                blk.attn.math = on

        def forward(self, x, t, labels):  # x [B, C, H, W] (torch layout), t [B]
            b, p, g = x.shape[0], PATCH, self.grid
            c_noise = t * self.time_scale
            c = self.t_embed(c_noise) + self.y_embed(labels)
            h = x.view(b, CHANNELS, g, p, g, p).permute(0, 2, 4, 3, 5, 1).reshape(b, g * g, p * p * CHANNELS)
            h = self.patch_embed(h) + self.pos
            for blk in self.blocks:
                h = blk(h, c)
            ss, _ = self.final_mod(c)
            h = self.final(modulate(h, ss[:, 0], ss[:, 1]))
            F = h.view(b, g, g, p, p, CHANNELS).permute(0, 5, 1, 3, 2, 4).reshape(b, CHANNELS, g * p, g * p)
            return F, self.logvar(c_noise)[:, 0]

    return DiT


def load_jax_params(model, params) -> None:
    """Copy scm_jax's DiT parameters (the trainer's pure dict) into the PyTorch twin (kernels transposed)."""
    import numpy as np
    import torch
    a = lambda x: torch.from_numpy(np.array(x, dtype=np.float32))
    lin = lambda m, p: (m.weight.data.copy_(a(p["kernel"]).reshape(m.in_features, -1).T),
                        m.bias.data.copy_(a(p["bias"]).reshape(-1)))

    def modulation(m, p):
        lin(m.scale_shift, p["scale_shift"])
        if m.gates is not None:
            lin(m.gates, p["gates"])
    lin(model.patch_embed, params["patch_embed"])
    for name in ("t_embed", "logvar"):
        lin(getattr(model, name).fc1, params[name]["fc1"])
        lin(getattr(model, name).fc2, params[name]["fc2"])
    model.y_embed.weight.data.copy_(a(params["y_embed"]["embedding"]))
    for i, blk in enumerate(model.blocks):
        p = params["blocks"][i]
        modulation(blk.modulation, p["modulation"])
        qkv = [a(p["attn"][n]["kernel"]).reshape(WIDTH, WIDTH) for n in ("q", "k", "v")]
        blk.attn.qkv.weight.data.copy_(torch.cat(qkv, 1).T)
        blk.attn.qkv.bias.data.copy_(torch.cat([a(p["attn"][n]["bias"]).reshape(-1) for n in ("q", "k", "v")]))
        lin(blk.attn.out, p["attn"]["out"])
        lin(blk.fc1, p["mlp"]["fc1"])
        lin(blk.fc2, p["mlp"]["fc2"])
    modulation(model.final_mod, params["final"]["modulation"])
    lin(model.final, params["final"]["linear"])


class TorchTrainer:
    """The PyTorch steps: the embedded config's Adam (lr 1e-2 diffusion / 5e-4 sCT), clip 1.0, one EMA."""

    def __init__(self, params, time_scale: float, batch: int, objective: str, lr: float, warmup: int):
        import copy
        import numpy as np
        import torch
        self.torch, self.objective, self.warmup = torch, objective, warmup
        self.model = torch_modules()(time_scale)
        load_jax_params(self.model, params)
        self.ema = [p.detach().clone() for p in copy.deepcopy(self.model).parameters()]
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr, eps=1e-8, foreach=True)
        rng = np.random.default_rng(0)
        self.x0 = torch.from_numpy(rng.uniform(-1, 1, (batch, CHANNELS, SIZE, SIZE)).astype(np.float32))
        self.labels = torch.from_numpy(rng.integers(0, CLASSES, batch))
        self.gen = torch.Generator().manual_seed(0)
        self.step_count = 0

    def _noise(self):
        torch, x0 = self.torch, self.x0
        z = SIGMA_D * torch.randn(x0.shape, generator=self.gen)
        t = torch.atan(torch.exp(P_MEAN + P_STD * torch.randn(x0.shape[0], generator=self.gen)) / SIGMA_D)
        ct, st = torch.cos(t)[:, None, None, None], torch.sin(t)[:, None, None, None]
        return t, ct, st, ct * x0 + st * z, ct * z - st * x0

    def _diffusion_loss(self):
        torch = self.torch
        t, _, _, xt, vt = self._noise()
        drop = torch.rand(t.shape, generator=self.gen) < 0.1
        labels = torch.where(drop, torch.full_like(self.labels, CLASSES), self.labels)
        F, logvar = self.model(xt / SIGMA_D, t, labels)
        err2 = (SIGMA_D * F - vt).square().mean((1, 2, 3))
        return (torch.exp(logvar) * err2 - logvar).mean()

    def _sct_loss(self):
        torch = self.torch
        t, ct, st, xt, vt = self._noise()
        x_in, r = xt / SIGMA_D, min(1.0, self.step_count / self.warmup)
        cs = ct * st
        with torch.no_grad():
            self.model.set_math_attention(True)
            F_minus, jvp_out = torch.func.jvp(lambda x, tt: self.model(x, tt, self.labels)[0], (x_in, t),
                                              (cs * vt, cs[:, 0, 0, 0] * SIGMA_D))
            self.model.set_math_attention(False)
            g = -ct**2 * (SIGMA_D * F_minus - vt) - r * (cs * xt + jvp_out)
            g = g / (g.flatten(1).norm(dim=1)[:, None, None, None] + 0.1)
        F, logvar = self.model(x_in, t, self.labels)
        err2 = (F - F_minus - g).square().mean((1, 2, 3))
        return (torch.exp(logvar) * err2 - logvar).mean()

    def step(self) -> float:
        torch = self.torch
        loss = self._diffusion_loss() if self.objective == "diffusion" else self._sct_loss()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0, foreach=True)
        self.opt.step()
        with torch.no_grad():
            params = list(self.model.parameters())
            torch._foreach_lerp_(self.ema, params, 0.01)
        self.step_count += 1
        return float(loss)


def count_torch(model) -> int:
    return sum(p.numel() for p in model.parameters())


def check_twins(setup, params, model) -> dict:
    """F and logvar of scm_jax's DiT and the PyTorch twin on the same perturbed weights and inputs."""
    import jax
    import numpy as np
    import torch
    from scm_jax.models.registry import model_apply
    rng = np.random.default_rng(1)
    noisy = jax.tree.map(lambda p: np.asarray(p) + 0.05 * rng.standard_normal(p.shape).astype(np.float32), params)
    load_jax_params(model, noisy)
    x = rng.standard_normal((4, SIZE, SIZE, CHANNELS)).astype(np.float32)
    t = rng.uniform(0.1, 1.5, 4).astype(np.float32)
    y = rng.integers(0, CLASSES, 4).astype(np.int32)
    F_j, lv_j = model_apply(setup.graphdef, noisy)(x, t, y)
    with torch.no_grad():
        F_t, lv_t = model(torch.from_numpy(x).permute(0, 3, 1, 2), torch.from_numpy(t), torch.from_numpy(y).long())
    F_t = F_t.permute(0, 2, 3, 1).numpy()
    load_jax_params(model, params)
    return {"max_abs_F": float(np.abs(F_t - np.asarray(F_j)).max()), "rms_F": float(np.sqrt(np.mean(F_t**2))),
            "max_abs_logvar": float(np.abs(lv_t.numpy() - np.asarray(lv_j)).max())}


# ------------------------------------------------------------------------------------------------------------
# XLA per-op profile.

def _hlo_ops(hlo_text: str) -> dict:
    """HLO instruction name -> (kind, jax primitive): kind is matmul (dot, YNNPACK dot fusion), loop fusion,
    copy / transpose or other; the primitive is the tail of the metadata op_name, prefixed bwd: under transpose."""
    ops = {}
    for m in re.finditer(r"%([\w.\-]+) = \S+ (\w[\w\-]*)\(.*?op_name=\"([^\"]*)\"", hlo_text):
        name, opcode, op_name = m.groups()
        if opcode == "dot" or "ynn_fusion" in name or opcode == "convolution":
            kind = "matmul"
        elif opcode == "fusion":
            kind = "loop fusion"
        elif opcode in ("copy", "transpose"):
            kind = "copy/transpose"
        else:
            kind = "other"
        prim = op_name.split("/")[-1]
        ops[name] = (kind, ("bwd:" if "transpose(" in op_name else "fwd:") + prim)
    return ops


def xla_profile(compiled, state, data, steps: int = 5) -> dict:
    """XLA:CPU's per-op wall time from a jax.profiler trace of `steps` calls (thunk events carrying `hlo_op`):
    per op the median over the steps of its time in a step, summed by kind and by jax primitive."""
    import jax
    import numpy as np
    state, _ = compiled(state, data)  # warm
    with tempfile.TemporaryDirectory() as logdir:
        jax.profiler.start_trace(logdir)
        walls = []
        for _ in range(steps):
            start = time.perf_counter()
            state, m = compiled(state, data)
            jax.block_until_ready(m["loss"])
            walls.append(time.perf_counter() - start)
        jax.profiler.stop_trace()
        path = next(os.path.join(d, f) for d, _, fs in os.walk(logdir) for f in fs if f.endswith(".xplane.pb"))
        prof = jax.profiler.ProfileData.from_file(path)
    durations = collections.defaultdict(list)
    for plane in prof.planes:
        for line in plane.lines:
            for ev in line.events:
                if any(k == "hlo_op" for k, _ in ev.stats):
                    durations[ev.name].append((ev.start_ns, ev.duration_ns / 1e6))
    per_op = {}
    for name, evs in durations.items():  # the k-th of `steps` equal chunks in time order is step k
        evs.sort()
        chunks = np.array_split(np.array([d for _, d in evs]), steps)
        per_op[name] = float(np.median([c.sum() for c in chunks]))
    info = _hlo_ops(compiled.as_text())
    kinds, prims = collections.Counter(), collections.Counter()
    for name, ms in per_op.items():
        kind, prim = info.get(name, ("other", "?"))
        kinds[kind] += ms
        prims[prim] += ms
    return {"wall_ms": 1e3 * statistics.median(walls), "ops_ms": sum(per_op.values()), "kinds_ms": dict(kinds),
            "primitives_ms": prims.most_common(16), "per_op_ms": per_op,
            "top_ops_ms": [(n, ms, *info.get(n, ("other", "?"))) for n, ms in
                           sorted(per_op.items(), key=lambda kv: -kv[1])[:12]]}


def torch_profile(trainer, steps: int = 3) -> dict:
    """torch.profiler's self CPU time per aten op of `steps` PyTorch steps (ms per step)."""
    import torch
    trainer.step()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            trainer.step()
    rows = sorted(((e.key, e.self_cpu_time_total / 1e3 / steps) for e in prof.key_averages()), key=lambda r: -r[1])
    return {"ops_ms": sum(ms for _, ms in rows), "top_ops_ms": rows[:12]}


# ------------------------------------------------------------------------------------------------------------

def child(args) -> dict:
    """One process: both frameworks' diffusion and sCT steps, round robin, at the current affinity."""
    import jax
    import numpy as np
    import torch
    threads = len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    runs, params_count = {}, {}
    for objective in ("diffusion", "sct"):
        compiled, state, data, setup = jax_step(objective, args.batch)
        config = jax_config(objective, args.batch)
        params = jax.tree.map(np.asarray, state["params"])
        trainer = TorchTrainer(params, config.model.time_scale, args.batch, objective, config.optim.lr,
                               config.scm.warmup_steps)
        params_count = {"scm_jax": int(sum(np.size(p) for p in jax.tree.leaves(params))),
                        "torch": count_torch(trainer.model)}
        if objective == "diffusion":
            check = check_twins(setup, params, trainer.model)
        runs[objective] = {"jax": [compiled, state, data], "torch": trainer}
    times = {f"{fw} {obj}": [] for obj in runs for fw in ("scm_jax", "torch")}
    for i in range(args.rounds + 2):  # two warm-up rounds
        for obj, r in runs.items():
            compiled, state, data = r["jax"]
            start = time.perf_counter()
            r["jax"][1], m = compiled(state, data)
            jax.block_until_ready(m["loss"])
            t_jax = time.perf_counter() - start
            start = time.perf_counter()
            r["torch"].step()
            t_torch = time.perf_counter() - start
            if i >= 2:
                times[f"scm_jax {obj}"].append(t_jax)
                times[f"torch {obj}"].append(t_torch)
    med = {k: statistics.median(v) for k, v in times.items()}
    out = {"threads": threads, "cpus": sorted(os.sched_getaffinity(0)), "median_s": med,
           "quartiles_s": {k: [float(np.percentile(v, 25)), float(np.percentile(v, 75))] for k, v in times.items()},
           "ratio": {obj: med[f"scm_jax {obj}"] / med[f"torch {obj}"] for obj in runs},
           "params": params_count, "twin_check": check, "loadavg_before": os.getloadavg()}
    if args.profile:
        out["profile"] = {}
        for obj, r in runs.items():
            x = xla_profile(*r["jax"])
            if args.dump_ops:
                with open(f"{args.dump_ops}_{obj}.json", "w") as fh:
                    json.dump({"per_op_ms": x["per_op_ms"], "hlo": _hlo_ops(r["jax"][0].as_text())}, fh)
            del x["per_op_ms"]
            out["profile"][obj] = {"scm_jax": x, "torch": torch_profile(r["torch"])}
    out["loadavg_after"] = os.getloadavg()
    return out


def markdown(results: list, args) -> str:
    r0 = results[0]
    lines = [
        "# scm_jax vs PyTorch: the same DiT's train step\n",
        f"`python bench/vs_torch.py --rounds={args.rounds}`. {platform.machine()} CPU "
        f"({_cpu_name()}), {os.cpu_count()} cores, shared with other jobs (load averages below). DiT width "
        f"{WIDTH}, depth {DEPTH}, {HEADS} heads, patch {PATCH}, {SIZE}x{SIZE}x{CHANNELS}, {CLASSES} classes, batch "
        f"{args.batch}; parameters scm_jax {r0['params']['scm_jax']:,}, PyTorch {r0['params']['torch']:,}. "
        f"Twin check (same weights, perturbed from init): max |F_jax - F_torch| = {r0['twin_check']['max_abs_F']:.1e} "
        f"(F rms {r0['twin_check']['rms_F']:.2f}), max |logvar| diff {r0['twin_check']['max_abs_logvar']:.1e}.\n",
        "Each row: one process pinned with taskset; the four steps run round robin; median (interquartile range) "
        "over the rounds after two warm-up rounds. ratio = scm_jax / PyTorch (goal: diffusion <= 1.0, sCT <= 0.75).\n",
        "| cpus | load before/after | step | scm_jax ms | PyTorch ms | ratio |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        for obj in ("diffusion", "sct"):
            j, t = r["median_s"][f"scm_jax {obj}"], r["median_s"][f"torch {obj}"]
            qj, qt = r["quartiles_s"][f"scm_jax {obj}"], r["quartiles_s"][f"torch {obj}"]
            lines.append(f"| {','.join(map(str, r['cpus']))} | {r['loadavg_before'][0]:.2f} / "
                         f"{r['loadavg_after'][0]:.2f} | {obj} | {1e3 * j:.0f} ({1e3 * qj[0]:.0f}-{1e3 * qj[1]:.0f}) "
                         f"| {1e3 * t:.0f} ({1e3 * qt[0]:.0f}-{1e3 * qt[1]:.0f}) | **{j / t:.2f}** |")
        lines.append(f"| {','.join(map(str, r['cpus']))} | | sct / diffusion | "
                     f"{r['median_s']['scm_jax sct'] / r['median_s']['scm_jax diffusion']:.2f} | "
                     f"{r['median_s']['torch sct'] / r['median_s']['torch diffusion']:.2f} | |")
    for r in results:
        if "profile" in r:
            lines += profile_markdown(r)
    return "\n".join(lines) + "\n"


def profile_markdown(r: dict) -> list:
    lines = [f"\n## Where the time goes (cpus {r['cpus']}, ms per step; traced steps run slower than untraced)\n"]
    for obj, p in r["profile"].items():
        x, t = p["scm_jax"], p["torch"]
        pct = lambda ms, total: f"{ms:.0f} ({100 * ms / total:.0f}%)"
        lines.append(f"**{obj}**: scm_jax traced step {x['wall_ms']:.0f} ms, its ops {x['ops_ms']:.0f} ms: "
                     + ", ".join(f"{k} {pct(v, x['ops_ms'])}" for k, v in
                                 sorted(x["kinds_ms"].items(), key=lambda kv: -kv[1]))
                     + ". By jax primitive: " + ", ".join(f"`{k}` {pct(v, x['ops_ms'])}" for k, v in x["primitives_ms"])
                     + ".\n")
        lines.append("| scm_jax op | kind | primitive | ms |\n|---|---|---|---|")
        lines += [f"| `{n}` | {kind} | `{prim}` | {ms:.1f} |" for n, ms, kind, prim in x["top_ops_ms"]]
        lines.append(f"\nPyTorch (torch.profiler self CPU time, {t['ops_ms']:.0f} ms per step): " + ", ".join(
            f"`{n}` {pct(ms, t['ops_ms'])}" for n, ms in t["top_ops_ms"]) + ".\n")
    return lines


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next(ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name"))
    except (OSError, StopIteration):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--cpus", action="append", help="taskset cpu list per process (default: 1 and 0,1)")
    parser.add_argument("--profile", action="store_true", help="XLA per-op profile in the first process")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--from_json", action="store_true", help="rewrite OUT.md from OUT.json (no timing)")
    parser.add_argument("--dump_ops", default="", help="with --child --profile: write every op's time to PATH_obj.json")
    parser.add_argument("--out", default=os.path.join(RESULTS, "vs_torch"), help="results path without extension")
    args = parser.parse_args()
    if args.from_json:  # rewrite the markdown of a finished run
        with open(args.out + ".json") as fh:
            args.rounds = json.load(fh)["rounds"]
        with open(args.out + ".json") as fh, open(args.out + ".md", "w") as out:
            out.write(markdown(json.load(fh)["runs"], args))
        return
    if args.child:
        print(json.dumps(child(args)))
        return
    results = []
    for i, cpus in enumerate(args.cpus or ["1", ",".join(str(c) for c in sorted(os.sched_getaffinity(0)))]):
        cmd = ["taskset", "-c", cpus, sys.executable, os.path.abspath(__file__), "--child",
               f"--rounds={args.rounds}", f"--batch={args.batch}"] + (["--profile"] if args.profile and i == 0 else [])
        env = {**os.environ, "PYTHONPATH": ROOT + os.pathsep + os.environ.get("PYTHONPATH", "")}
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
        if proc.returncode:
            sys.exit(f"child on cpus {cpus} failed:\n{proc.stderr[-4000:]}")
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        print(json.dumps({k: results[-1][k] for k in ("cpus", "median_s", "ratio")}), flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out + ".json", "w") as fh:
        json.dump({"machine": _cpu_name(), "batch": args.batch, "rounds": args.rounds, "runs": results}, fh, indent=1)
    text = markdown(results, args)
    with open(args.out + ".md", "w") as fh:
        fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
