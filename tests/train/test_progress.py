"""ETA past a day, MFU from the peak table, and the step timer that leaves out excluded work."""
import jax.numpy as jnp
import pytest

from scm_jax.train import progress


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
