"""Defaults shared by every experiment; each experiment file overrides what it needs and locks the config."""
from ml_collections import ConfigDict


def get_base_config() -> ConfigDict:
    c = ConfigDict()
    c.seed = 0
    c.objective = "diffusion"  # "diffusion" | "sct" | "scd"

    c.data = ConfigDict(dict(name="embedded", data_dir="", split="train", kind="pixels",
                             image_size=32, channels=1, num_classes=10))
    # DiT (scm_jax.models.dit.DiTConfig); image size / channels / classes come from `data`.
    c.model = ConfigDict(dict(patch_size=2, hidden_size=384, depth=12, num_heads=6, mlp_ratio=4.0,
                              dropout=0.0, attention="reference", dtype="float32", param_dtype="float32",
                              remat="none", time_scale=1.0, logvar_channels=128))
    c.diffusion = ConfigDict(dict(P_mean=-1.0, P_std=1.4, adaptive_weight=True, label_dropout=0.1))
    c.scm = ConfigDict(dict(
        warmup_steps=10_000, tangent_norm="l2", tangent_c=0.1, adaptive_weight=True, prior_weight=False,
        jvp="exact", fd_delta=1e-3, label_dropout=0.0,
        tangent_attention="blockwise",          # the JVP pass needs a jvp-able kernel
        teacher_workdir="",                     # sCD: workdir of the diffusion teacher run
        teacher_weights="ema_0.5",              # which weights of the teacher: "params" or an EMA name
        init_from_teacher=True,                 # sCD starts from the teacher's weights (sCM §5)
        guidance_lo=1.0, guidance_hi=1.0))      # sCD CFG scale s ~ U[lo, hi]; (1, 1) = no guidance
    c.optim = ConfigDict(dict(name="radam", lr=1e-4, b1=0.9, b2=0.999, eps=1e-8, warmup_steps=0, grad_clip=0.0))
    c.train = ConfigDict(dict(batch_size=512, steps=100_000, log_every=100, ema_half_lives_mimg=(0.5,),
                              max_bad_steps=10))
    c.checkpoint = ConfigDict(dict(every_steps=5_000, keep=3, async_save=True))
    c.sample = ConfigDict(dict(every_steps=10_000, num=64))   # 1- and 2-step grids (Heun for diffusion)
    c.eval = ConfigDict(dict(every_steps=0, num_samples=1_000))  # embedded-set FD / accuracy; 0 = off
    c.mesh = ConfigDict(dict(data=-1, fsdp=1, tensor=1, rules="fsdp"))
    return c
