"""The start-up report: what a run runs on, one block in the log, in metrics.jsonl ("startup") and TensorBoard."""
from typing import Any, Optional

import jax
import jaxlib
from ml_collections import ConfigDict

from scm_jax.parallel.batch import BatchSplit
from scm_jax.train.progress import peak_flops


def startup_report(config: ConfigDict, mesh: jax.sharding.Mesh, split: BatchSplit, params: Any,
                   flops: Optional[float], cache_dir: Optional[str], first_step_s: float,
                   cache_hits: int) -> dict[str, Any]:
    """Versions, devices, mesh, batch split, parameters and XLA's FLOPs per step and device ("-": none)."""
    kind = jax.devices()[0].device_kind
    peak = peak_flops(kind)
    return {
        "jax": jax.__version__, "jaxlib": jaxlib.__version__, "platform": jax.default_backend(),
        "device_kind": kind, "devices": jax.device_count(), "processes": jax.process_count(),
        "mesh": " ".join(f"{axis}={size}" for axis, size in mesh.shape.items()), "mesh_rules": config.mesh.rules,
        "global_batch": split.global_batch, "per_device_batch": split.per_device, "microbatch": split.microbatch,
        "accum_steps": split.accum_steps,
        "parameters": sum(int(p.size) for p in jax.tree.leaves(params)),
        "xla_flops_per_step_per_device": flops if flops else "-",
        "peak_flops_per_device": peak if peak else f"- (no bf16 peak for {kind!r}: MFU not reported)",
        "compile_cache": cache_dir or "off",
        "first_step_s": round(first_step_s, 2),  # compilation (or loading it from the cache) included
        "compile_cache_hits": cache_hits,
    }


def format_report(fields: dict[str, Any]) -> str:
    width = max(map(len, fields))
    return "\n".join(f"  {k:<{width}}  {v:.4g}" if isinstance(v, float) else f"  {k:<{width}}  {v}"
                     for k, v in fields.items())
