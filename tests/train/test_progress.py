"""ETA past a day, MFU from the peak table, and the step timer that leaves out excluded work."""
import jax.numpy as jnp
import pytest

from scm_jax.train import log, progress


@pytest.mark.parametrize("seconds, text", [(0, "00:00:00"), (3_661, "01:01:01"), (86_399, "23:59:59"),
                                           (86_400, "1d 00:00:00"), (500_000, "5d 18:53:20"), (-5, "00:00:00")])
def test_eta_counts_days(seconds, text):
    assert progress.eta(seconds) == text


@pytest.mark.parametrize("kind, tflops", [("NVIDIA A100-SXM4-80GB", 312), ("NVIDIA H100 80GB HBM3", 989),
                                          ("NVIDIA H200", 989), ("TPU v4", 275), ("TPU v5 lite", 197),
                                          ("TPU v5e", 197), ("TPU v5p", 459), ("TPU v5", 459),
                                          ("TPU v6 lite", 918), ("TPU v6e", 918)])
def test_peak_flops_of_each_device_kind(kind, tflops):
    assert progress.peak_flops(kind) == tflops * 1e12


def test_mfu_is_achieved_over_peak_and_none_on_cpu():
    assert progress.mfu(312e12 * 0.5, 1.0, "NVIDIA A100-SXM4-80GB") == pytest.approx(0.5)
    assert progress.mfu(459e12, 4.0, "TPU v5p") == pytest.approx(0.25)
    assert progress.mfu(1e12, 1.0, "cpu") is None
    assert progress.mfu(None, 1.0, "TPU v4") is None


def test_step_timer_leaves_out_excluded_work(monkeypatch):
    clock = iter([0.0, 10.0, 13.0, 20.0])  # restart, exclude from 10 s to 13 s, read at 20 s
    monkeypatch.setattr(progress.time, "perf_counter", lambda: next(clock))
    timer = progress.StepTimer()
    with timer.exclude(jnp.zeros(())):
        pass
    timer.count()
    assert (timer.steps, timer.seconds()) == (1, 17.0)


def _warnings(series: dict[int, float], warmup_steps: int = 100) -> list[int]:
    watch = progress.TangentWatch(warmup_steps)
    return [step for step, value in series.items() if watch.check(step, {"jvp_rms": value})]


def test_tangent_watch_warns_once_per_rise_of_a_collapsing_run():
    # jvp_rms of a sCD run that collapsed after step 400 (ablations §8, N1), and of one before the warmup ends
    collapse = {150: 0.2807, 200: 0.2831, 300: 0.2807, 350: 0.2783, 400: 0.2986, 450: 0.313, 500: 0.318,
                550: 0.28, 600: 0.32}
    assert _warnings(collapse) == [450, 600]
    assert _warnings({50: 0.20, 100: 0.30, 150: 0.29}) == []  # the rise during the tangent warmup


def test_tangent_watch_is_quiet_on_stable_runs():
    scd = {150: 0.2807, 200: 0.2831, 250: 0.2816, 300: 0.2807, 350: 0.2783, 1550: 0.2811, 1600: 0.2824}
    sct = {150: 0.3264, 200: 0.3335, 250: 0.3303, 300: 0.3367, 350: 0.3354, 400: 0.3332}  # N3: rises ~3%
    assert _warnings(scd) == [] and _warnings(sct) == []
    assert progress.TangentWatch(0).check(10, {"loss": 1.0}) is None  # objectives without a tangent


def test_the_trainer_watches_scd_only():
    # sCT of the main job at batch 16 (ablations §11): a healthy run whose jvp_rms drifts up 11%
    sct = {500: 0.3214, 800: 0.3473, 1000: 0.3409, 1400: 0.3435, 1550: 0.3568, 1600: 0.347}
    assert _warnings(sct) == [1550]  # what the sCD threshold would say
    assert progress.TangentWatch.of("sct", 100) is None and progress.TangentWatch.of("diffusion", 100) is None
    assert progress.TangentWatch.of("scd", 100).ratio == 1.1


def test_tangent_watch_keeps_the_floor_of_a_resumed_run():
    # N1 resumed at step 400, mid-rise: a floor of this session only (0.2986) would miss the rise at 450
    before = ((100, 0.30), (150, 0.2807), (350, 0.2783), (400, 0.2986))
    watch = progress.TangentWatch(100, history=before)
    assert watch.floor == 0.2783  # steps within the tangent warmup are left out
    assert watch.check(450, {"jvp_rms": 0.313}) is not None
    assert progress.TangentWatch(100).check(450, {"jvp_rms": 0.313}) is None  # the first value is the floor


def test_logged_reads_a_scalar_up_to_the_resumed_step(tmp_path):
    lines = ['{"step": 1, "startup": {"devices": 1}}', '{"step": 50, "jvp_rms": 0.3, "loss": 1.0}',
             '{"step": 100, "loss": 0.9}', '{"step": 150, "jvp_rms": 0.28}', '{"step": 200, "jvp_rms": 0.27}',
             '{"step": 250, "jvp_']  # a line cut short by a crash
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines))
    assert log.logged(str(tmp_path), "jvp_rms", 150) == ((50, 0.3), (150, 0.28))
    assert log.logged(str(tmp_path / "new"), "jvp_rms", 150) == ()
