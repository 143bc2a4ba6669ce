"""Preemption: SIGINT saves the current step and returns; with several processes JAX's preemption sync point makes
every host stop at the same step when one of them gets SIGTERM."""
import signal
import socket
import subprocess
import sys

from scm_jax.train import loop
from tests.reliability.harness import ENV, REPO, smoke, steps

_HOST = """
import sys, time
import jax
process_id, port = int(sys.argv[1]), sys.argv[2]
jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
from scm_jax.train.preemption import Preemption
with Preemption() as preempted:
    print("READY", flush=True)
    for step in range(1, 100_000):
        time.sleep(0.01 * (1 + process_id))  # the hosts run at different speeds
        if preempted.reached(step):
            print("STOPPED AT", step, flush=True)
            break
"""


def test_sigint_saves_current_step_and_returns(tmp_path, monkeypatch):
    real = loop.make_train_step

    def make(*args, **kwargs):
        train_step = real(*args, **kwargs)

        def interrupted_at_3(state, batch):
            if int(state["step"]) == 2:
                signal.raise_signal(signal.SIGINT)  # Ctrl-C during step 3
            return train_step(state, batch)
        return interrupted_at_3

    monkeypatch.setattr(loop, "make_train_step", make)
    config = smoke(**{"checkpoint.every_steps": 100, "checkpoint.async_save": False})
    before = signal.getsignal(signal.SIGINT)  # SIG_IGN when pytest runs as a background job
    state = loop.train_and_evaluate(config, str(tmp_path))
    assert int(state["step"]) == 3 and steps(tmp_path)[-1] == 3
    assert signal.getsignal(signal.SIGINT) is before  # handlers restored


def test_hosts_agree_on_the_preemption_step(tmp_path):
    """SIGTERM to one of two processes: both stop at the same step (multihost_utils preemption sync point)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(ENV, XLA_FLAGS="--xla_force_host_platform_device_count=1")
    hosts = [subprocess.Popen([sys.executable, "-c", _HOST, str(i), str(port)], cwd=REPO, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for i in range(2)]
    try:
        for host in hosts:  # lines before READY are library logs (e.g. the CUDA plugin of the gpu-plan extra)
            assert any(line.strip() == "READY" for line in iter(host.stdout.readline, "")), "a host died before READY"
        hosts[1].send_signal(signal.SIGTERM)
        outputs = [host.communicate(timeout=120)[0] for host in hosts]
    finally:
        for host in hosts:
            host.kill()
    stops = [out.split("STOPPED AT")[-1].split()[0] if "STOPPED AT" in out else out[-2000:] for out in outputs]
    assert [h.returncode for h in hosts] == [0, 0] and stops[0] == stops[1], outputs
