"""Exit statuses of the real `si-lightning` executable: 0 on success, 2 for a bad setting, 1 for a failure.

Each test launches the console script (and one ``python -m si_lightning.cli``) as a subprocess with a
timeout, in a temporary working directory, and asserts the status and the last line it printed.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from si_lightning.cli import main

REPOSITORY = Path(__file__).resolve().parents[2]
DIGITS = REPOSITORY / "configs" / "experiments" / "digits.yaml"
EXECUTABLE = Path(sys.executable).parent / "si-lightning"


class Payload:
    """Unpickling this under a plain ``pickle.load`` runs ``touch <marker>``."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def tiny_overlay(directory: Path, callbacks: tuple = ()) -> Path:
    """3 steps of the digits experiment: EMA only (plus ``callbacks``), no logger, everything under ``directory``."""
    overlay = {
        "trainer": {
            "max_steps": 3,
            "logger": False,
            "default_root_dir": str(directory / "runs"),
            "enable_progress_bar": False,
            "callbacks": [{"class_path": "si_lightning.callbacks.EMA", "init_args": {"decay": 0.9}}, *callbacks],
        }
    }
    path = directory / "tiny.yaml"
    path.write_text(yaml.safe_dump(overlay))
    return path


def run(arguments: list[str], directory: Path, module: bool = False, timeout: int = 240) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "si_lightning.cli"] if module else [str(EXECUTABLE)]
    environment = {**os.environ, "PYTHONPATH": str(REPOSITORY), "SI_LIGHTNING_CACHE": str(directory / "cache")}
    environment.pop("SI_LIGHTNING_DEBUG", None)
    return subprocess.run(
        command + arguments, cwd=directory, env=environment, capture_output=True, text=True, timeout=timeout
    )


def last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else ""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_successful_run_exits_0(tmp_path):
    result = run(["fit", "-c", str(DIGITS), "-c", str(tiny_overlay(tmp_path))], tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    output = result.stdout + result.stderr
    assert "`Trainer.fit` stopped: `max_steps=3` reached." in output
    assert "error:" not in output and "Traceback" not in output
    assert "object at 0x" not in result.stdout  # the CLI object is not printed as an exit message


@pytest.mark.timeout(200)
def test_a_bad_setting_exits_2_with_one_line(tmp_path):
    arguments = ["fit", "-c", str(DIGITS), "-c", str(tiny_overlay(tmp_path)), "--model.backbone.init_args.norm_groups"]
    result = run([*arguments, "7"], tmp_path)
    assert result.returncode == 2
    assert last_line(result.stderr) == (
        "error: model.backbone.init_args.norm_groups = 7: UNet norm_groups=7 must divide model_channels=32"
    )
    assert "Traceback" not in result.stderr
    assert sorted(path.name for path in tmp_path.iterdir()) == ["tiny.yaml"]  # no run directory, no cache


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_debug_adds_the_traceback_and_python_m_exits_the_same(tmp_path):
    arguments = ["fit", "-c", str(DIGITS), "-c", str(tiny_overlay(tmp_path)), "--trainer.gradient_clip_val", "-1"]
    expected = "error: trainer.gradient_clip_val = -1.0: a finite number >= 0 (0: none)"
    plain = run(arguments, tmp_path, module=True)
    assert plain.returncode == 2 and last_line(plain.stderr) == expected and "Traceback" not in plain.stderr
    debug = run([*arguments, "--debug"], tmp_path)
    assert debug.returncode == 2 and last_line(debug.stderr) == expected
    assert "Traceback (most recent call last)" in debug.stderr


@pytest.mark.slow
@pytest.mark.timeout(400)
# The payload through the executable (a real process shows no code ran); the other two through the same
# entry point in this process (each start-up of the executable costs about 7 s of CPU).
@pytest.mark.parametrize("kind", ["missing", "random-bytes", "payload"])
def test_a_bad_checkpoint_exits_2_naming_the_file(tmp_path, kind, monkeypatch, capsys):
    checkpoint = tmp_path / f"{kind}.ckpt"
    marker = tmp_path / "payload-ran"
    if kind == "random-bytes":
        checkpoint.write_bytes(os.urandom(2048))
    elif kind == "payload":
        payload = {"state_dict": {}, "loops": Payload(str(marker))}
        torch.save(payload, checkpoint, pickle_protocol=pickle.HIGHEST_PROTOCOL)
    arguments = ["fit", "-c", str(DIGITS), "-c", str(tiny_overlay(tmp_path)), "--ckpt_path", str(checkpoint)]
    if kind == "payload":
        result = run(arguments, tmp_path)
        status, stderr = result.returncode, result.stderr
    else:
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("SI_LIGHTNING_DEBUG", raising=False)
        monkeypatch.setattr(sys, "argv", ["si-lightning"])  # LightningCLI warns when given both
        status, stderr = main(arguments), capsys.readouterr().err
    assert status == 2, stderr[-2000:]
    line = last_line(stderr)
    assert line.startswith(f"error: ckpt_path = '{checkpoint}': ") and "Traceback" not in stderr
    refusal = f"refused by the safe loader: unpickling it would call {os.system.__module__}.system"
    reasons = {"missing": "no such checkpoint file", "random-bytes": "PyTorch checkpoint", "payload": refusal}
    assert reasons[kind] in line and "weights_only" not in stderr
    assert not marker.exists()
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_failure_while_training_exits_1(tmp_path):
    """Checkpoints go to a path that is a file: the first save, at step 2, fails while training."""
    blocker = tmp_path / "checkpoints-here"
    blocker.write_text("a file where the checkpoint folder should be")
    checkpointing = {
        "class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
        "init_args": {"dirpath": str(blocker / "inner"), "every_n_train_steps": 2},
    }
    overlay = tiny_overlay(tmp_path, (checkpointing,))
    result = run(["fit", "-c", str(DIGITS), "-c", str(overlay)], tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    line = last_line(result.stderr)
    assert line.startswith(("error: NotADirectoryError: ", "error: FileExistsError: ")), line
    assert str(blocker) in line and line.endswith("(rerun with --debug for the traceback)")
    assert "Traceback" not in result.stderr


@pytest.mark.timeout(300)
def test_predict_and_unknown_commands_exit_2_pointing_at_sample(tmp_path):
    """There is no predict step: one line lists the commands, and nothing is left in the working directory."""
    completed = run(["predict", "-c", str(DIGITS)], tmp_path)
    assert completed.returncode == 2, completed.stderr[-2000:]
    assert last_line(completed.stderr) == (
        "error: subcommand = 'predict': one of: fit, validate, test, sample, evaluate, forecast "
        "(samples of a checkpoint come from 'si-lightning sample')"
    )
    assert sorted(path.name for path in tmp_path.iterdir()) == []
