"""A second Ctrl-C through the real executable: the run stops at once and the command exits 130.

The first Ctrl-C asks for a stop with a checkpoint at the next batch boundary; the second, sent
while the first is still waiting for that boundary (inside a long evaluation), quits at once.
Lightning catches that KeyboardInterrupt and calls ``sys.exit(1)``; the command must still say
"interrupted" in its last line and exit with the shell's status for Ctrl-C, 130.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.integration.executable import EXECUTABLE, digits_arguments, environment, last_line

FIRST_INTERRUPT_LINE = "stopping after this step with a checkpoint (Ctrl-C again to quit now)"

# An evaluation after every step whose batches take seconds each: the first Ctrl-C waits inside it.
SLOW_EVALUATION = """
trainer:
  logger: false
  default_root_dir: {root}
  limit_val_batches: 0
  enable_progress_bar: false
  callbacks:
    - class_path: si_lightning.callbacks.SamplingCallback
      init_args:
        num_samples: 8192
        batch_size: 1024
        every_n_steps: 1
        samplers:
          ode-heun:
            class_path: si_lightning.sampling.ODESampler
            init_args:
              method: heun
              steps: 50
"""


def wait_for_line(log: Path, text: str, process: subprocess.Popen, timeout: float) -> None:
    """Poll the stderr file until ``text`` appears; fail if the process ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        if process.poll() is not None:
            pytest.fail(f"the run ended (status {process.returncode}) first:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            pytest.fail(f"{text!r} did not appear within {timeout} s:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_second_ctrl_c_quits_at_once_with_status_130(tmp_path: Path) -> None:
    config = tmp_path / "slow-evaluation.yaml"
    config.write_text(SLOW_EVALUATION.format(root=tmp_path / "runs"))
    stderr_file = tmp_path / "stderr.txt"
    with open(stderr_file, "w") as stderr:
        process = subprocess.Popen(
            [str(EXECUTABLE), *digits_arguments(config, 5)],
            cwd=tmp_path,
            env=environment(),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            start_new_session=True,
        )
    try:
        wait_for_line(stderr_file, "Seed set to", process, timeout=120)
        time.sleep(2.0)  # past set-up: the first step is taken, its evaluation runs
        os.kill(process.pid, signal.SIGINT)
        wait_for_line(stderr_file, FIRST_INTERRUPT_LINE, process, timeout=60)
        os.kill(process.pid, signal.SIGINT)
        status = process.wait(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    text = stderr_file.read_text()
    assert status == 130, text[-3000:]
    assert last_line(text) == "si-lightning: interrupted at global step 1; stopped at once, without a checkpoint"
    assert "Traceback" not in text
    assert list((tmp_path / "runs").rglob("*.ckpt")) == []
