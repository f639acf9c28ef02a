"""configs/backbone/dit-digits.yaml through the real executable: the digits experiment with a small DiT for its UNet."""

from __future__ import annotations

import pytest

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

DIT_DIGITS = REPOSITORY / "configs" / "backbone" / "dit-digits.yaml"


@pytest.mark.timeout(300)
def test_dit_digits_trains_through_the_executable(tmp_path):
    """The shipped overlay as it is, 2 steps: exit 0, Lightning's closing line, the step-2 checkpoint holding
    three DiT blocks of width 64 with the 253,572 weights the config's comment gives, a loss per step."""
    config = training_config(tmp_path, tmp_path / "runs", every=2)
    arguments = [str(EXECUTABLE), *digits_arguments(config, 2, 16, "-c", str(DIT_DIGITS))]
    result = run(arguments, tmp_path, timeout=280)
    assert result.returncode == 0, result.stderr[-4000:]
    assert last_line(result.stderr) == "`Trainer.fit` stopped: `max_steps=2` reached."
    (version,) = (tmp_path / "runs" / "digits").glob("version_*")
    assert checkpoint_steps(version / "checkpoints") == [2]
    weights = load(version / "checkpoints" / "last.ckpt")["state_dict"]
    backbone = {key: value for key, value in weights.items() if key.startswith("backbone.")}
    assert sum(value.numel() for value in backbone.values()) == 253_572
    assert "backbone.blocks.2.attention.qkv.weight" in backbone and "backbone.blocks.3.mlp.0.weight" not in backbone
    assert backbone["backbone.blocks.0.mlp.0.weight"].shape == (256, 64)
    assert sorted(losses_by_step(version / "metrics.csv")) == [0, 1]
