"""configs/backbone/zigma-digits.yaml through the real executable: the digits experiment with ZigMa for its UNet."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.integration.executable import (
    EXECUTABLE,
    REPOSITORY,
    checkpoint_steps,
    digits_arguments,
    last_line,
    load,
    losses_by_step,
    run,
    training_config,
)

ZIGMA_DIGITS = REPOSITORY / "configs" / "backbone" / "zigma-digits.yaml"
DDP = REPOSITORY / "configs" / "trainer-ddp.yaml"
# The shipped config's structure (patches, zigzag paths, Mamba) at a width that trains in seconds.
TINY = ["--model.backbone.init_args.hidden_size", "16", "--model.backbone.init_args.depth", "2"]


def zigma_digits(tmp_path: Path, steps: int, *extra: str) -> list[str]:
    config = training_config(tmp_path, tmp_path / "runs", every=steps)
    return [str(EXECUTABLE), *digits_arguments(config, steps, 16, "-c", str(ZIGMA_DIGITS), *TINY, *extra)]


@pytest.mark.timeout(300)
def test_zigma_digits_trains_through_the_executable_with_ema(tmp_path):
    """4 steps with the EMA callback (decay 0.9): exit 0, Lightning's closing line, the step-4 checkpoint with
    the average in ``state_dict`` and the raw weights beside it, a loss per step."""
    result = run(zigma_digits(tmp_path, 4), tmp_path, timeout=280)
    assert result.returncode == 0, result.stderr[-4000:]
    assert last_line(result.stderr) == "`Trainer.fit` stopped: `max_steps=4` reached."
    (version,) = (tmp_path / "runs" / "digits").glob("version_*")
    assert checkpoint_steps(version / "checkpoints") == [4]
    checkpoint = load(version / "checkpoints" / "last.ckpt")
    average, raw = checkpoint["state_dict"], checkpoint["current_model_state"]
    assert "backbone.blocks.1.mixer.A_log" in average and not any("paths" in key for key in average)
    # After 4 updates the average (warm-up decays 2/11, 3/12, 4/13) is not the last weights.
    assert not torch.equal(average["backbone.final_layer.linear.weight"], raw["backbone.final_layer.linear.weight"])
    assert sorted(losses_by_step(version / "metrics.csv")) == [0, 1, 2, 3]


@pytest.mark.slow  # two ranks start, each importing Lightning, on the CI machine's two cores
@pytest.mark.timeout(420)
def test_zigma_digits_trains_on_two_ddp_ranks(tmp_path):
    """configs/trainer-ddp.yaml (gloo on the CPU) sets find_unused_parameters: false, so a parameter that
    took no part in a step would fail the next one's gradient reduction: two steps that end with exit 0
    show every ZigMa parameter is reduced in every step."""
    arguments = zigma_digits(tmp_path, 2, "-c", str(DDP), "--trainer.devices", "2")
    result = run(arguments, tmp_path, timeout=400)
    assert result.returncode == 0, result.stderr[-4000:]
    assert last_line(result.stderr) == "`Trainer.fit` stopped: `max_steps=2` reached."
    (version,) = (tmp_path / "runs" / "digits").glob("version_*")
    assert checkpoint_steps(version / "checkpoints") == [2]
