"""CIFAR-10 32x32 (class-conditional), sCM paper hyper-parameters on a DiT-B/2.

Prepare the data once (tfds, array_record; see README "Data"), then:

    scm-train --config=configs/cifar10.py:diffusion --workdir=runs/c10_teacher --config.data.data_dir=DATA_DIR
    scm-train --config=configs/cifar10.py:sct --workdir=runs/c10_sct --config.data.data_dir=DATA_DIR
    scm-train --config=configs/cifar10.py:scd --workdir=runs/c10_scd --config.data.data_dir=DATA_DIR \\
        --config.scm.teacher_workdir=runs/c10_teacher

sCM §5 / Appendix: RAdam lr 1e-4, batch 512, P_mean -1.0, P_std 1.4, dropout 0.2, EMA half-life 0.5 Mimg,
tangent warmup 10k iterations, adaptive weighting. The paper's CIFAR-10 network is NCSN++; here the DiT-B/2.
Append `,smoke` for a seconds-long run of a tiny model on the same data (tests build a fake CIFAR-10).
"""
from configs.base import get_base_config, shrink_for_smoke, split_arg
from scm_jax.models.dit import SIZES

OBJECTIVES = ("diffusion", "sct", "scd")


def get_config(arg: str = "diffusion"):
    objective, smoke = split_arg(arg, OBJECTIVES)
    c = get_base_config()
    c.objective = objective
    c.data.update(name="cifar10", image_size=32, channels=3, num_classes=10)
    c.model.update(patch_size=2, dropout=0.2, **SIZES["B"])
    c.optim.update(name="radam", lr=1e-4)
    c.diffusion.update(P_mean=-1.0, P_std=1.4)
    c.train.update(batch_size=512, steps=400_000, ema_half_lives_mimg=(0.5,))
    c.scm.update(warmup_steps=10_000, teacher_weights="ema_0.5")
    if smoke:
        shrink_for_smoke(c, patch_size=8)
    c.lock()
    return c
