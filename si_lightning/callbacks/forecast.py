"""ForecastCallback: ensemble roll-outs of a forecasting model during training, scored against the solver.

The first ``inputs`` trajectories of the data module's ``split`` (a ``KolmogorovFlowDataModule`` or any data
module with ``trajectories(split)`` -> (count, snapshots, 2, N, N)) give the initial states and the truth.
Member m of input k draws its noise from the seed ``derived_seed(seed, "forecast", k, m)``, as
``si-lightning forecast --seed`` does, so the callback's roll-outs of a run's last step are those of the
``forecast`` command on its last checkpoint (the same inputs, in the same order). Ranks share the inputs
(r, r + W, ...) and gather the forecasts. The scores are ``si_lightning.forecasting.forecast_scores``,
logged as ``forecast-{score}/m{members}-s{sde_steps}/n{inputs}`` (the scalars of ``SCALAR_SCORES``).
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch

from si_lightning.callbacks.artifacts import publish_metrics, run_directory
from si_lightning.callbacks.generation import evaluation_mode, gather_in_order, local_indices
from si_lightning.callbacks.schedule import PeriodicEvaluation
from si_lightning.checks import positive_count
from si_lightning.forecasting import SCALAR_SCORES, decorrelation_lead, forecast_scores, rollout
from si_lightning.seeding import derived_seed


class ForecastCallback(PeriodicEvaluation):
    """Every ``every_n_steps`` steps and at the end: scores of ensemble roll-outs from held-out states.

    Args:
        inputs: held-out trajectories rolled out (the first ones of ``split``), >= 1.
        members: ensemble members per input, >= 2 (the spread needs two).
        steps: forecast steps (lead times); None: every snapshot of the trajectories after the first.
        sde_steps: SDE steps per forecast step.
        split: the data module's split of the trajectories.
        spectrum_from: the first lead of the spectrum average (1 .. steps).
        seed: the seed the members' noise derives from.
        every_n_steps: evaluate after every N-th optimiser step (None: only at the end).
        at_end: evaluate when fit ends.
        ema: use the EMA weights (the raw weights if False).
    """

    sample_counts = ("inputs",)

    def __init__(
        self,
        inputs: int = 4,
        members: int = 4,
        steps: int | None = None,
        sde_steps: int = 20,
        split: str = "test",
        spectrum_from: int = 1,
        seed: int = 0,
        every_n_steps: int | None = None,
        at_end: bool = True,
        ema: bool = True,
    ) -> None:
        super().__init__(every_n_steps, at_end)
        self.inputs = positive_count("inputs", inputs)
        self.members = positive_count("members", members, minimum=2)
        self.steps = None if steps is None else positive_count("steps", steps)
        self.sde_steps = positive_count("sde_steps", sde_steps)
        self.split = split
        self.spectrum_from = positive_count("spectrum_from", spectrum_from)
        self.seed = positive_count("seed", seed, minimum=0)
        self.ema = bool(ema)

    def truth(self, trainer: pl.Trainer) -> torch.Tensor:
        """(inputs, steps + 1, 2, N, N) float64: the held-out trajectories the forecasts are scored against."""
        trajectories = getattr(trainer.datamodule, "trajectories", None)
        if trajectories is None:
            raise ValueError(
                "ForecastCallback needs a data module with trajectories(split), e.g. KolmogorovFlowDataModule"
            )
        held_out = trajectories(self.split)
        count, snapshots = held_out.shape[:2]
        if self.inputs > count:
            raise ValueError(f"ForecastCallback inputs must be at most the {count} trajectories of {self.split!r}")
        steps = snapshots - 1 if self.steps is None else self.steps
        if steps > snapshots - 1:
            raise ValueError(
                f"ForecastCallback steps must be at most {snapshots - 1} (the trajectories' snapshots - 1)"
            )
        if self.spectrum_from > steps:
            raise ValueError(
                f"ForecastCallback spectrum_from must be at most steps ({steps}); got {self.spectrum_from}"
            )
        return held_out[: self.inputs, : steps + 1].double()

    def prepare(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self.truth(trainer)  # every setting checked against the data before the first step

    def evaluate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        truth = self.truth(trainer).to(pl_module.device)
        steps = truth.shape[1] - 1
        local = []
        with evaluation_mode(pl_module, self.ema):
            backbone = pl_module.weights_backbone(self.ema)
            for index in local_indices(trainer, self.inputs):
                generators = [torch.Generator().manual_seed(derived_seed(self.seed, "forecast", index, member))
                              for member in range(self.members)]  # fmt: skip
                start = truth[index, 0].expand(self.members, *truth.shape[2:])
                local.append(rollout(pl_module.interpolant, backbone, start, steps, self.sde_steps, generators))
        shape = (self.members, steps + 1, *truth.shape[2:])
        mine = torch.stack(local) if local else truth.new_zeros((0, *shape))
        forecasts = gather_in_order(trainer, mine, self.inputs)
        decorrelation = decorrelation_lead(truth)
        scores = forecast_scores(forecasts, truth, decorrelation, self.spectrum_from)
        label = f"m{self.members}-s{self.sde_steps}"
        metrics = {
            f"forecast-{name.replace('_', '-')}/{label}/n{self.inputs}": float(scores[name])
            for name in SCALAR_SCORES
            if name in scores
        }
        details = {"steps": steps, "split": self.split, "decorrelation_lead": decorrelation}
        publish_metrics(trainer, run_directory(trainer), metrics, details)
