"""One process of a sharded sampling run as scm-sample does it (the mesh spans the devices of all processes):

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python -m tests.cli.sharded_sampling ID N PORT OUT

A fixed toy network stands in for the DiT, so the samples depend only on the sampler, its noise and the sharding.
Prints the rows of the first batch that this process computed.
"""
import sys

import jax
import jax.numpy as jnp
import numpy as np

from scm_jax.parallel.mesh import make_mesh
from scm_jax.samplers import consistency, generate

NUM, BATCH, SEED = 24, 16, 5  # two global batches, the last one cut
BATCHES = generate.Batches(BATCH, (4, 4, 1), num_classes=10)


def toy_apply(params):
    return lambda x_in, t, labels=None, guidance=None, dropout_key=None: (
        params["w"] * jnp.tanh(x_in) + (t + labels)[:, None, None, None] / 10, None)


def samples(mesh) -> tuple[np.ndarray, np.ndarray, int]:
    """(images, labels, rows of the first batch this process computed)."""
    sample = generate.batch_sampler(toy_apply, generate.Method(times=consistency.TWO_STEP), BATCHES, mesh)
    params = {"w": jnp.float32(0.7)}
    local_rows = sum(s.data.shape[0] for s in sample(params, np.int32(SEED), np.int32(0))[0].addressable_shards)
    return (*generate.sample_many(sample, params, NUM, BATCH, SEED), local_rows)


if __name__ == "__main__":
    process_id, num_processes, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=num_processes, process_id=process_id)
    images, labels, local_rows = samples(make_mesh(-1, 1, 1))
    np.savez(f"{out}_{process_id}.npz", images=images, labels=labels)
    print("LOCAL_ROWS", local_rows, flush=True)
