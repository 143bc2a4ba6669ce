"""The same train steps on a 2x2x2 (data, fsdp, tensor) mesh and on one device agree."""
import jax
import numpy as np
from jax.sharding import PartitionSpec as P

from configs import embedded
from scm_jax.parallel.mesh import make_mesh
from scm_jax.train.optim import make_optimizer
from scm_jax.train.state import make_setup, sharded_init
from scm_jax.train.step import make_train_step


def run_steps(config, mesh, steps=2):
    setup = make_setup(config, mesh, make_optimizer(config))
    state = sharded_init(setup, jax.random.key(0))
    train_step = make_train_step(setup, config)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        batch = {"image": rng.uniform(-1, 1, (16, 32, 32, 1)).astype(np.float32),
                 "label": rng.integers(0, 10, 16).astype(np.int32)}
        state, _ = train_step(state, batch)
    return setup, state


def test_fsdp_tensor_mesh_matches_single_device():
    config = embedded.get_config("sct,smoke")
    config.model.hidden_size = 64  # divisible by fsdp and tensor
    config.mesh.rules = "fsdp_tp"  # the "tensor" axis needs tensor-parallel rules
    setup8, sharded = run_steps(config, make_mesh(2, 2, 2))
    _, single = run_steps(config, make_mesh(1, 1, 1, devices=jax.devices()[:1]))
    specs = jax.tree.leaves(setup8.specs["params"], is_leaf=lambda s: isinstance(s, P))
    assert any("fsdp" in str(s) for s in specs) and any("tensor" in str(s) for s in specs)
    for a, b in zip(jax.tree.leaves(sharded["params"]), jax.tree.leaves(single["params"])):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=2e-4, atol=2e-6)
    assert int(sharded["step"]) == 2
