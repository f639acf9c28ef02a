"""InterpolantModule: an interpolant, a backbone and a prediction, trained with Lightning.

The module owns the loss of MATH.md section 2 and hands the trained fields to the samplers
(``fields()``); sampling, FID and likelihood live in callbacks, so this file changes only when
training changes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters
from torch import Tensor, nn
from torchmetrics import MeanMetric

from si_lightning.condition import Condition
from si_lightning.couplings import mask_velocity
from si_lightning.interpolants import Interpolant, TimeSampler, UniformTime, get_prediction, interpolant_loss
from si_lightning.sampling import Fields, GuidedFields, NetworkFields
from si_lightning.sampling.masked import KeptPixelFields


class InterpolantModule(pl.LightningModule):
    """Trains ``backbone`` to predict ``prediction`` for ``interpolant``.

    Args:
        backbone: an nn.Module with ``forward(x, t, cond=None)`` (si_lightning/nn/).
        interpolant: the interpolant x_t = alpha x0 + beta x1 + gamma z; linear with gamma = 0 by default.
        prediction: one of velocity, velocity+denoiser, score, denoiser, data.
        optimizer: a callable params -> Optimizer (LightningCLI's OptimizerCallable).
        lr_scheduler: a callable optimizer -> LR scheduler, stepped every optimiser step; None for constant.
        time_sampler: the training density of t; uniform on the valid interval by default.
        reweight_time: multiply the per-sample loss by (uniform density / sampler density) so a
            non-uniform time sampler still minimises the uniform-in-t objective.
        antithetic: average the loss over x_t^+ and x_t^- ([U] section 6.1).
        loss_bins: how many equal t-bins the epoch loss is also reported in (0 to turn off).
    """

    def __init__(
        self,
        backbone: nn.Module,
        interpolant: Interpolant | None = None,
        prediction: str = "velocity",
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        time_sampler: TimeSampler | None = None,
        reweight_time: bool = False,
        antithetic: bool = False,
        loss_bins: int = 4,
    ) -> None:
        super().__init__()
        self._save_hyperparameters_for_reload(locals())
        self.backbone = backbone
        self.interpolant = interpolant if interpolant is not None else Interpolant()
        self.prediction_name = prediction
        self.prediction = get_prediction(prediction)
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.time_sampler = time_sampler if time_sampler is not None else UniformTime()
        self.reweight_time = reweight_time
        self.antithetic = antithetic
        if loss_bins < 0:
            raise ValueError(f"loss_bins must be >= 0, got {loss_bins}")
        self.check_backbone_outputs()
        # A score-based prediction gives b only where the conversions are finite (both ends excluded).
        self.train_interval = self.interpolant.valid_interval(need_score=self.prediction.needs_score_interval)
        # Keys are prefixed: "train" would clash with nn.Module.train.
        self.loss_bins = nn.ModuleDict(
            {f"{phase}_bins": nn.ModuleList(MeanMetric() for _ in range(loss_bins)) for phase in ("train", "val")}
        )

    def _save_hyperparameters_for_reload(self, arguments: dict[str, Any]) -> None:
        """Save what ``load_from_checkpoint(path)`` needs to rebuild the model.

        Under LightningCLI the hyper-parameters are the parsed config (class paths and init args), so
        every argument is saved. In plain Python the backbone and the other objects are not
        serialisable with ``weights_only=True`` loading; they are left out and must be passed again:
        ``InterpolantModule.load_from_checkpoint(path, backbone=...)``.
        """
        if _given_hyperparameters.get() is not None:
            self.save_hyperparameters()
            return
        objects = [name for name, value in arguments.items() if name not in ("self", "__class__")]
        ignore = [name for name in objects if not isinstance(arguments[name], (str, int, float, bool, type(None)))]
        self.save_hyperparameters(ignore=ignore)

    def check_backbone_outputs(self) -> None:
        """The prediction ``velocity+denoiser`` needs twice the data channels from the backbone."""
        data_shape = getattr(self.backbone, "data_shape", None)
        out_channels = getattr(self.backbone, "out_channels", None)
        if data_shape is None or out_channels is None:
            return
        expected = self.prediction.outputs * data_shape[0]
        if out_channels != expected:
            raise ValueError(
                f"prediction {self.prediction_name!r} needs a backbone with out_channels = {expected} "
                f"({self.prediction.outputs} x {data_shape[0]} data channels), got out_channels = {out_channels}"
            )

    # ------------------------------------------------------------------------------------- set-up
    def setup(self, stage: str) -> None:
        """Check the data against the backbone before the first step, naming both shapes."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None:
            return
        data_shape = tuple(getattr(datamodule, "data_shape", ()) or ())
        backbone_shape = tuple(getattr(self.backbone, "data_shape", ()) or ())
        if data_shape and backbone_shape and data_shape != backbone_shape:
            raise ValueError(
                f"the data has shape {data_shape} (channels, size...) but the backbone was built for "
                f"{backbone_shape}; set the backbone's data_shape to {data_shape}"
            )
        for name in ("num_classes", "cond_channels"):
            data_value, backbone_value = getattr(datamodule, name, None), getattr(self.backbone, name, None)
            if data_value is not None and backbone_value is not None and data_value != backbone_value:
                raise ValueError(
                    f"the data gives {name} = {data_value} but the backbone was built with {name} = {backbone_value}"
                )
        if getattr(datamodule, "gaussian_base", True) is False and self.interpolant.gaussian_base:
            raise ValueError(
                "the data's coupling has a data-dependent base but the interpolant assumes gaussian_base=True; "
                "set interpolant gaussian_base: false"
            )

    def configure_optimizers(self) -> Any:
        try:
            optimizer = self.optimizer_factory(self.parameters())
        except ValueError as error:  # torch names the value; say what was expected too
            raise ValueError(f"invalid optimizer settings: {error} (expected lr >= 0 and valid betas/eps)") from error
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------------------------ training
    def network(self, cond: Condition | None) -> Callable[[Tensor, Tensor], Tensor]:
        """The backbone as the (x_t, t) -> output callable the losses expect."""
        return lambda x, t: self.backbone(x, t, cond)

    def forward(self, x: Tensor, t: Tensor, cond: Condition | None = None) -> Tensor:
        """The raw network output (batch, outputs * C, ...) at (x_t, t)."""
        return self.backbone(x, t, cond)

    def per_sample_loss(self, batch: Any, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """(loss (batch,), t (batch,)) for a Batch(x0, x1, cond) from a coupling."""
        x0, x1, cond = batch.x0, batch.x1, batch.cond
        t = self.time_sampler(x1.shape[0], self.train_interval, x1.device, x1.dtype, generator)
        z = None
        if generator is not None:
            z = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        network = self.network(cond)
        if cond is not None and cond.keep is not None and self.prediction_name.startswith("velocity"):
            network = self._kept_pixels_fixed(network, cond)
        loss = interpolant_loss(
            self.interpolant,
            self.prediction,
            network,
            x0,
            x1,
            t,
            z,
            antithetic=self.antithetic,
            check_time=False,  # t comes from the time sampler on the valid interval: no host sync per step
        )
        if self.reweight_time:
            loss = loss * self.time_sampler.uniform_weight(t, self.train_interval)
        return loss, t

    @staticmethod
    def _kept_pixels_fixed(network: Callable[[Tensor, Tensor], Tensor], cond: Condition) -> Callable:
        """The network with its velocity output zero on in-painting's kept pixels (``cond.keep`` = 1).

        There the target alpha' x0 + beta' x1 is zero (x0 = x1, linear interpolant), so the loss reads
        the hidden pixels only and the trained field never moves a known pixel.
        """
        return lambda x, t: mask_velocity(network(x, t), cond)

    def _log_bins(self, phase: str, loss: Tensor, t: Tensor) -> None:
        """Epoch means of the loss in equal t-bins, accumulated on the device (no host sync per step)."""
        metrics = self.loss_bins[f"{phase}_bins"]
        if len(metrics) == 0:
            return
        t_min, t_max = self.train_interval
        index = ((t - t_min) / (t_max - t_min) * len(metrics)).long().clamp(0, len(metrics) - 1)
        detached = loss.detach()
        for bin_index, metric in enumerate(metrics):
            inside = (index == bin_index).to(detached.dtype)
            count = inside.sum()
            metric.update((detached * inside).sum() / count.clamp_min(1), weight=count)
            low = t_min + (t_max - t_min) * bin_index / len(metrics)
            high = t_min + (t_max - t_min) * (bin_index + 1) / len(metrics)
            self.log(f"{phase}/loss_t[{low:.2f},{high:.2f}]", metric, on_step=False, on_epoch=True)

    def on_train_start(self) -> None:
        """A generator for t and z per rank: seed_everything gives every DDP rank the same global seed,
        which would draw the same t and z on each. Seeded by (seed, rank, step), so a resumed run
        draws a fresh, reproducible stream."""
        seed = (torch.initial_seed() + 1_000_003 * self.global_rank + self.global_step) % (2**63)
        self.training_generator = torch.Generator(device=self.device).manual_seed(seed)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss, t = self.per_sample_loss(batch, getattr(self, "training_generator", None))
        mean = loss.mean()
        self.log("train/loss", mean, prog_bar=True, batch_size=t.shape[0])
        self._log_bins("train", loss, t)
        return mean

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        # The same t and z for a batch index in every validation run, so curves are comparable.
        generator = torch.Generator(device=batch.x1.device).manual_seed(batch_idx)
        loss, t = self.per_sample_loss(batch, generator)
        mean = loss.mean()
        self.log("val/loss", mean, prog_bar=True, batch_size=t.shape[0], sync_dist=True)
        self._log_bins("val", loss, t)
        return mean

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        generator = torch.Generator(device=batch.x1.device).manual_seed(batch_idx)
        loss, t = self.per_sample_loss(batch, generator)
        self.log("test/loss", loss.mean(), batch_size=t.shape[0], sync_dist=True)
        return loss.mean()

    # ------------------------------------------------------------------------------------ sampling
    def weights_backbone(self, ema: bool) -> nn.Module:
        """The backbone holding the EMA (``ema``) or raw weights now.

        Lightning's weight averaging swaps the average into the module during validation and copies
        it in at the end of training; in between it lives in the callback. A callback that knows
        which (``averaged_module``/``raw_module``, si_lightning.callbacks.EMA) is asked; with none
        attached, the module's own weights are used (a checkpoint's ``state_dict`` is the average).
        """
        trainer = self._trainer
        callbacks: Iterable[Any] = trainer.callbacks if trainer is not None else ()
        for callback in callbacks:
            if hasattr(callback, "averaged_module"):
                module = callback.averaged_module(self) if ema else callback.raw_module(self)
                return module.backbone
        return self.backbone

    def fields(
        self,
        ema: bool = True,
        guidance_scale: float | None = None,
        guidance_interval: tuple[float, float] | None = None,
    ) -> Fields:
        """Sampler-ready Fields (velocity and score) from the trained network, EMA weights by default.

        Classifier-free guidance with w = ``guidance_scale`` (on ``guidance_interval`` of t only, if
        given); the velocity is zero on pixels a condition marks as known (``cond.keep``, in-painting).
        """
        backbone = self.weights_backbone(ema)
        fields = NetworkFields(
            network=lambda x, t, cond=None: backbone(x, t, cond),
            interpolant=self.interpolant,
            prediction=self.prediction_name,
        )
        if guidance_scale is not None:
            num_classes = getattr(backbone, "num_classes", 0)
            fields = GuidedFields(fields, guidance_scale, null_label=num_classes, interval=guidance_interval)
        return KeptPixelFields(fields)
