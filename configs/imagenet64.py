"""ImageNet 64x64 in pixel space (64x64x3, 1000 classes): DiT-XL/4 teacher, sCT and sCD.

Import the images once (`python -m scm_jax.data.build --source=DIR --name=imagenet64 --data_dir=DATA_DIR`), then:

    scm-plan --config=configs/imagenet64.py:scd --topology=a100_sxm_80:1x1x8 --hbm_gib=72.9
    scm-train --config=configs/imagenet64.py:diffusion --workdir=runs/in64_teacher --config.data.data_dir=DATA_DIR
    scm-train --config=configs/imagenet64.py:scd --workdir=runs/in64_scd --config.data.data_dir=DATA_DIR \\
        --config.scm.teacher_workdir=runs/in64_teacher
    scm-train --config=configs/imagenet64.py:sct --workdir=runs/in64_sct --config.data.data_dir=DATA_DIR

DiT-XL with patch 4 (256 tokens), bf16 compute, float32 parameters, RAdam lr 1e-4 with Adam eps 1e-11, global
batch 2048 in microbatches of at most 128 per device (`train.microbatch`; scm-plan fits 203 per A100-80GB),
P_mean -1.0, P_std 1.4, dropout 0.2 (sCM's pixel-space ImageNet 64 setting), EMA half-lives 0.05 / 0.1 Mimg, sCD
guidance scale s ~ U[1, 2] fed to the student, 8-way FSDP per node. Append `,smoke` for a tiny model on the same
image shape (tests, CI).
"""
from configs.base import get_base_config, shrink_for_smoke, split_arg
from scm_jax.models.dit import SIZES

OBJECTIVES = ("diffusion", "sct", "scd")


def get_config(arg: str = "scd"):
    objective, smoke = split_arg(arg, OBJECTIVES)
    c = get_base_config()
    c.objective = objective
    c.data.update(name="imagenet64", kind="pixels", image_size=64, channels=3, num_classes=1000)
    c.model.update(patch_size=4, dropout=0.2, attention="blockwise", dtype="bfloat16", param_dtype="float32",
                   remat="dots", **SIZES["XL"])
    c.optim.update(name="radam", lr=1e-4, b1=0.9, b2=0.99, eps=1e-11)
    c.diffusion.update(P_mean=-1.0, P_std=1.4)
    # 128 images per device per pass: within scm-plan's 203 per A100-80GB (docs/scale.md); 2 accumulation steps
    # on one 8-GPU node, none from 16 devices up.
    c.train.update(batch_size=2048, steps=400_000, ema_half_lives_mimg=(0.05, 0.1), microbatch=128)
    c.scm.update(warmup_steps=10_000, teacher_weights="ema_0.05", guidance_lo=1.0, guidance_hi=2.0)  # sCD only
    c.mesh.update(dcn=1, data=1, fsdp=-1, tensor=1, rules="fsdp")
    if smoke:
        shrink_for_smoke(c, patch_size=16)
    c.lock()
    return c
