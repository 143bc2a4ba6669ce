"""Embedded MNIST-5k (32x32x1, 10 classes): diffusion teacher, sCT or sCD on a small EDM2 U-Net, on CPU in minutes.

    scm-train --config=configs/embedded.py:diffusion --workdir=runs/teacher
    scm-train --config=configs/embedded.py:sct --workdir=runs/sct
    scm-train --config=configs/embedded.py:scd --workdir=runs/scd --config.scm.teacher_workdir=runs/teacher

CM baselines in EDM form (spec §5): `:ct`, `:ict`; `:cd` and `:ect` start from (and CD distils) the teacher:
    scm-train --config=configs/embedded.py:ect --workdir=runs/ect --config.scm.teacher_workdir=runs/teacher

Phased consistency (PCM, spec §5): `:pcm` (discrete) and `:pscm` (continuous-time phased sCM) distil the teacher
over config.pcm.phases phases (--config.pcm.distill=False: consistency training, no teacher;
--config.pcm.adv_weight=0.1: PCM's adversarial loss with a critic trained alongside):
    scm-train --config=configs/embedded.py:pcm --workdir=runs/pcm --config.scm.teacher_workdir=runs/teacher

Append `,smoke` (e.g. `:sct,smoke`) for a seconds-long run of a tiny model (tests, CI).
"""
from configs.base import get_base_config, split_arg

OBJECTIVES = ("diffusion", "sct", "scd", "cd", "ct", "ict", "ect", "pcm", "pscm")


def get_config(arg: str = "diffusion"):
    objective, smoke = split_arg(arg, OBJECTIVES)
    c = get_base_config()
    c.objective = objective
    # A 0.46M-parameter EDM2 U-Net (bench/results/ablations.md: on 2 CPU cores it learns digits several times
    # faster than the patch-4 DiT of the same step time); Adam at EDM2's 1e-2 for its magnitude-preserving layers.
    c.model.update(name="unet", channels=16, channel_mult=(1, 2, 2), num_blocks=2, attn_resolutions=(8,),
                   channels_per_head=16, dropout=0.0)
    c.optim.update(name="adam", lr=1e-2, warmup_steps=100, grad_clip=1.0,
                   cooldown_steps=200)  # the teacher's last steps: FD 24.0 -> 19.9 (CFG 1.25; ablations §11)
    c.train.update(batch_size=64, steps=2_000, log_every=50, ema_half_lives_mimg=(0.02,))
    c.checkpoint.update(every_steps=500, keep=2)
    c.sample.update(every_steps=1_000, num=64)
    c.eval.update(every_steps=0, num_samples=500)
    c.scm.update(warmup_steps=400, teacher_weights="ema_0.02")
    c.cm.ect.stage_steps = 250  # 8 stages in 2k steps (ECT CIFAR-10: 16 stages of 25k)
    if objective != "diffusion":  # students start from the teacher; with the CM baselines' loss at 1e-3 they
        c.optim.update(lr=5e-4, cooldown_steps=0)  # collapsed within 300-600 steps, 5e-4 improves monotonically
        c.train.ema_rampup_ratio = 0.2             # (ablations §6); a cooldown made students worse (§9)
    if objective in ("sct", "scd"):  # sCM's adaptive weight w_phi(t) caused the collapses (ablations §8): without
        c.scm.adaptive_weight = False  # it the students learn 1.5-2x faster per step, at 1e-3
        c.optim.update(lr=1e-3, b2=0.99, warmup_steps=400)  # b2 0.999 had sCD's raw weights collapse (§10)
        c.train.update(batch_size=16, steps=1_600)  # the main job's budget: the images of 400 x 64 at the same
                                                    # cost per image; 2-step FD sCD 28.5 -> 23.2, sCT 35.9 -> 31.8 (§11)
        c.sample.t_mid = 1.3           # 2-step at t_mid 1.3 (sCM: 1.1) is 4-5 FD better from step 400 on
    if objective == "scd":  # distil the teacher's best sampler, CFG 1.25 (FD 19.5, accuracy 0.91 vs 21.2 / 0.82
        c.scm.update(guidance_lo=1.25, guidance_hi=1.25)  # unguided; ablations §7)
    if smoke:
        c.model.update(channels=8, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(16,), channels_per_head=8)
        c.train.update(batch_size=16, steps=6, log_every=2)
        c.optim.update(warmup_steps=10, cooldown_steps=0)
        c.checkpoint.update(every_steps=3, async_save=False)
        c.sample.update(every_steps=6, num=16)
        c.scm.warmup_steps = 3
        c.cm.ect.stage_steps = 2
    c.lock()
    return c
