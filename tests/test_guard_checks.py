"""The finite-checkpoint check and the guard's settings, on plain checkpoint dictionaries."""

from __future__ import annotations

import math

import pytest
import torch

from si_lightning.callbacks import NonFiniteGuard
from si_lightning.callbacks.guard import check_finite_checkpoint, first_nonfinite
from si_lightning.errors import TrainingDiverged


def checkpoint() -> dict:
    """What Lightning writes with an EMA callback and Adam, all finite; a callback state holds an infinite score."""
    return {
        "global_step": 12,
        "state_dict": {"backbone.weight": torch.ones(3, 3), "backbone.steps": torch.tensor(4)},
        "current_model_state": {"backbone.weight": torch.full((3, 3), 2.0)},
        "optimizer_states": [{"state": {0: {"exp_avg": torch.zeros(3, 3), "exp_avg_sq": torch.zeros(3, 3)}}}],
        "callbacks": {"ModelCheckpoint": {"kth_value": torch.tensor(math.inf)}},
    }


def test_a_finite_checkpoint_passes_and_callback_states_may_hold_infinities():
    check_finite_checkpoint(checkpoint(), None)


@pytest.mark.parametrize(
    ("entry", "value", "name"),
    [
        ("state_dict", math.nan, "state_dict.backbone.weight"),
        ("current_model_state", math.inf, "current_model_state.backbone.weight"),
        ("optimizer_states", -math.inf, "optimizer_states.0.state.0.exp_avg_sq"),
    ],
)
def test_a_nonfinite_weight_or_moment_is_named(entry, value, name):
    broken = checkpoint()
    if entry == "optimizer_states":
        broken[entry][0]["state"][0]["exp_avg_sq"][1, 2] = value
    else:
        broken[entry]["backbone.weight"][1, 2] = value
    with pytest.raises(TrainingDiverged) as caught:
        check_finite_checkpoint(broken, None)
    assert str(caught.value) == (
        f"non-finite weights at global step 12 ({name}): the checkpoint was not written; "
        "the last finite checkpoint is none"
    )


def test_first_nonfinite_is_exact_for_huge_finite_values():
    """The inf-norm cannot overflow: 1e30 squared would be inf in float32, 1e30 itself is finite."""
    tensors = [("huge", torch.full((1000,), 1e30)), ("small", torch.ones(2)), ("nan", torch.tensor([0.0, math.nan]))]
    assert first_nonfinite(tensors[:2]) is None
    assert first_nonfinite(tensors) == "nan"


def test_an_unknown_action_is_refused():
    with pytest.raises(ValueError, match="NonFiniteGuard action = 'ignore': expected one of stop, skip"):
        NonFiniteGuard(action="ignore")


def test_an_unknown_check_and_a_deferred_skip_are_refused():
    with pytest.raises(ValueError, match="check = 'later': expected one of auto, immediate, deferred"):
        NonFiniteGuard(check="later")
    with pytest.raises(ValueError, match="check = 'deferred': expected 'immediate' or 'auto' with action 'skip'"):
        NonFiniteGuard(action="skip", check="deferred")
