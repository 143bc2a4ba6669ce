"""Mixed precision: a DiT computing in bf16 (fp32 master weights, optimizer, EMAs and time path) trains sCT and
sCD like the fp32 one.

Both runs start from the same fp32 parameters and see the same batches and keys, so their metrics differ only by
bf16 rounding. Tolerances, relative, on the mean of the last 5 of 12 steps: bf16 keeps 8 significant bits (spacing
2^-8 = 0.4%). loss and mse 1%: they go through fp32 paths (w_phi(t), the tangent g) plus the bf16 output F, so a
few roundings of F bound the gap (measured: loss < 1e-6, mse < 5e-5). F_rms and jvp_rms 3%: the tangent dF/dt
is propagated through every bf16 layer, a few roundings in sequence (measured: F_rms < 0.05%, jvp_rms 0.03% for
sCT and 1.1% for sCD, whose jvp is still small after 12 steps).
"""
import jax
import numpy as np
import pytest

from configs import embedded
from scm_jax.parallel.mesh import make_mesh
from scm_jax.train.optim import make_optimizer
from scm_jax.train.state import make_setup, sharded_init
from scm_jax.train.step import make_train_step
from tests.oracles import F_vel

DATA_STD = 0.8  # Gaussian data N(0, s^2): sCD's teacher is the exact velocity (spec §6)
STEPS = 12
RTOL = {"loss": 0.01, "mse": 0.01, "F_rms": 0.03, "jvp_rms": 0.03}


def train(objective: str, dtype: str) -> dict[str, np.ndarray]:
    config = embedded.get_config(f"{objective},smoke")
    with config.unlocked():
        config.model.update(name="dit", dtype=dtype, param_dtype="float32", hidden_size=64, depth=2, num_heads=4)
        config.data.num_classes = 0
        config.scm.update(guidance_lo=1.0, guidance_hi=1.0)  # the Gaussian oracle teacher is unconditional
        config.optim.update(lr=1e-3, warmup_steps=0)
    setup = make_setup(config, make_mesh(-1, 1, 1), make_optimizer(config))
    state = sharded_init(setup, jax.random.key(0))
    teacher = (lambda x_in, t, labels=None: F_vel(DATA_STD)(x_in, t)[0]) if objective == "scd" else None
    train_step = make_train_step(setup, config, teacher)
    rng, history = np.random.default_rng(0), []
    for _ in range(STEPS):
        batch = {"image": DATA_STD * rng.standard_normal((16, 32, 32, 1), np.float32),
                 "label": np.zeros(16, np.int32)}
        state, metrics = train_step(state, batch)
        history.append(jax.device_get(metrics))
    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves(state["opt_state"]) if leaf.dtype.kind == "f")
    assert all(leaf.dtype == np.float32 for leaf in jax.tree.leaves((state["params"], state["ema"])))
    return {k: np.array([m[k] for m in history]) for k in history[0]}


@pytest.mark.slow  # two 12-step runs per objective
@pytest.mark.parametrize("objective", ["sct", "scd"])
def test_bf16_trains_like_fp32(objective):
    fp32, bf16 = train(objective, "float32"), train(objective, "bfloat16")
    assert bf16["finite"].all() and all(np.isfinite(v).all() for v in bf16.values())
    assert fp32["r"][-1] == 1.0  # the tangent warmup is over: the full JVP term is in the loss
    for key, rtol in RTOL.items():
        last_fp32, last_bf16 = fp32[key][-5:].mean(), bf16[key][-5:].mean()
        assert abs(last_bf16 - last_fp32) <= rtol * abs(last_fp32), (key, last_fp32, last_bf16)
