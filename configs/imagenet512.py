"""ImageNet 512x512 in the SD-VAE latent space (64x64x4, 1000 classes): DiT-1.5B/2 teacher, sCT and sCD.

Encode the images once to 64x64x4 SD-VAE latents (`python -m scm_jax.data.build --source=IMAGENET_TRAIN_DIR
--name=imagenet512 --data_dir=DATA_DIR --vae=sd_vae.npz --resolution=512`; the loader scales them by the mean / std
the build records, scm_jax/data/latents.py), plan the memory before booking accelerators, then train (a set of your
own: `--config.data.name=NAME --config.data.num_classes=K`, as the build prints; docs/runbook.md §6 has the whole
recipe, to FID and FD_DINOv2):

    scm-plan --config=configs/imagenet512.py:scd --topology=a100_sxm_80:1x1x8 --hbm_gib=72.9   # 8x A100-80GB, XLA:GPU
    scm-train --config=configs/imagenet512.py:diffusion --workdir=runs/in512_teacher --config.data.data_dir=DATA_DIR
    scm-train --config=configs/imagenet512.py:scd --workdir=runs/in512_scd --config.data.data_dir=DATA_DIR \\
        --config.scm.teacher_workdir=runs/in512_teacher
    scm-train --config=configs/imagenet512.py:sct --workdir=runs/in512_sct --config.data.data_dir=DATA_DIR

Issue 7 settings: DiT-1.5B (36 blocks, 1536 wide, 24 heads) on 64x64x4 latents with patch 2 (1024 tokens), Adam
eps 1e-11, global batch 2048 in microbatches of 16 per device (`train.microbatch`; the trainer derives the
accumulation steps: 16 on one 8-GPU node, 4 on 4 nodes or a v5p-64 slice; `--config.train.microbatch=32` uses a
v5p chip's room, up to 36), bf16 compute with float32 parameters, per-block remat, FSDP over every device of a
node (mesh.fsdp=-1) and data parallelism across nodes / slices (mesh.dcn). P_mean -0.8, P_std 1.6 (sCM's latent
ImageNet setting), lr 1e-4, b2 0.99, EMA half-lives 0.05 / 0.1 Mimg, sCD guidance scale s ~ U[1, 2] fed to the
student. Attention is "blockwise" everywhere so the plan compiles on CPU / TPU; on GPUs,
`--config.model.attention=cudnn --config.scm.tangent_attention=blockwise` runs the student with cuDNN flash
attention and F^- as its own blockwise pass (cuDNN cannot be forward-differentiated). Otherwise one jax.jvp of the
student gives F, F^- and the tangent (`scm.tangent_attention=same`): on TPU v5p it costs 46.4 GiB per chip at 16
images instead of 44.9 GiB, for 13% fewer FLOPs per step; XLA:GPU plans 44.1 GiB per A100 at 16 images and fits 26
(docs/scale.md). Append `,smoke` for a tiny model on the same latent shape (tests, CI).
"""
from configs.base import get_base_config, shrink_for_smoke, split_arg
from scm_jax.models.dit import SIZES

OBJECTIVES = ("diffusion", "sct", "scd")


def get_config(arg: str = "scd"):
    objective, smoke = split_arg(arg, OBJECTIVES)
    c = get_base_config()
    c.objective = objective
    c.data.update(name="imagenet512", kind="latents", image_size=64, channels=4, num_classes=1000)
    c.model.update(patch_size=2, dropout=0.0, attention="blockwise", dtype="bfloat16", param_dtype="float32",
                   remat="full", **SIZES["1.5B"])
    c.optim.update(name="adam", lr=1e-4, b1=0.9, b2=0.99, eps=1e-11)
    c.diffusion.update(P_mean=-0.8, P_std=1.6)
    # 16 images per device per pass: within scm-plan's maxima (docs/scale.md: 26 per A100-80GB, 36 per v5p chip;
    # 52.2 of 72.7 GiB per H100 at 16); the accumulation steps follow from the device count (4 on 32 devices).
    c.train.update(batch_size=2048, steps=200_000, ema_half_lives_mimg=(0.05, 0.1), microbatch=16)
    c.scm.update(warmup_steps=10_000, teacher_weights="ema_0.05", guidance_lo=1.0, guidance_hi=2.0)  # sCD only
    c.mesh.update(dcn=1, data=1, fsdp=-1, tensor=1, rules="fsdp")
    if smoke:
        shrink_for_smoke(c, patch_size=8)
    c.lock()
    return c
