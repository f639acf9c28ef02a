"""InterpolantModule: an interpolant, a backbone and a prediction, trained with Lightning.

The module owns the loss of docs/math.md section 2 and hands the trained fields to the samplers
(``fields()``); sampling, FID and likelihood live in callbacks, so this file changes only when
training changes.
"""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable, Iterable
from typing import IO, Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from si_lightning.callbacks.guard import check_finite_checkpoint
from si_lightning.checkpoints import explain_unloadable_checkpoint
from si_lightning.condition import Condition
from si_lightning.couplings import mask_velocity
from si_lightning.interpolants import (
    Interpolant,
    MultimarginalInterpolant,
    TimeSampler,
    UniformTime,
    get_prediction,
    interpolant_loss,
)
from si_lightning.sampling import Fields, FittedGrid, GuidedFields, NetworkFields
from si_lightning.sampling.masked import KeptPixelFields
from si_lightning.seeding import derived_seed


class class_only_method(classmethod):  # noqa: N801 - a decorator, named like classmethod
    """``classmethod`` that refuses a call through an instance.

    ``model.load_from_checkpoint(path)`` returns a new model and leaves ``model`` as it was, a mistake
    that is easy to make and silent; this is what Lightning's own (private) decorator of the method
    does, written against the public descriptor protocol so a Lightning upgrade cannot remove it.
    """

    def __get__(self, instance: object, owner: type | None = None) -> Callable[..., Any]:
        bound = super().__get__(instance, owner)
        if instance is None:
            return bound

        @functools.wraps(self.__func__)
        def refuse(*args: Any, **kwargs: Any) -> Any:
            raise TypeError(
                f"The classmethod `{type(instance).__name__}.{self.__func__.__name__}` cannot be called on an "
                "instance. Please call it on the class type and make sure the return value is used."
            )

        return refuse


class ChoosesModelByInterpolant(type(pl.LightningModule)):
    """``InterpolantModule(interpolant=MultimarginalInterpolant(...), ...)`` builds a ``MultimarginalModule``.

    So the command line's one model section (and ``load_from_checkpoint``) covers both kinds of model: the
    interpolant named in the config decides which is trained. A metaclass rather than ``__new__``, because
    the command line reads the constructor's signature, which a ``__new__`` would hide.
    """

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        interpolant = kwargs.get("interpolant", args[1] if len(args) > 1 else None)
        if cls is InterpolantModule and isinstance(interpolant, MultimarginalInterpolant):
            from si_lightning.multimarginal_module import MultimarginalModule  # it imports this module

            return MultimarginalModule(*args, **kwargs)
        return super().__call__(*args, **kwargs)


class InterpolantModule(pl.LightningModule, metaclass=ChoosesModelByInterpolant):
    """Trains ``backbone`` to predict ``prediction`` for ``interpolant``.

    Args:
        backbone: an nn.Module with ``forward(x, t, cond=None)`` (si_lightning/nn/).
        interpolant: the interpolant x_t = alpha x0 + beta x1 + gamma z; linear with gamma = 0 by default.
            A ``MultimarginalInterpolant`` builds a ``MultimarginalModule`` instead (``ChoosesModelByInterpolant``).
        prediction: one of velocity, velocity+denoiser, velocity+score, score, denoiser, data.
        optimizer: a callable params -> Optimizer (LightningCLI's OptimizerCallable).
        lr_scheduler: a callable optimizer -> LR scheduler, stepped every optimiser step; None for constant.
        time_sampler: the training density of t; uniform on the valid interval by default.
        reweight_time: multiply the per-sample loss by (uniform density / sampler density) so a
            non-uniform time sampler still minimises the uniform-in-t objective.
        antithetic: average the loss over x_t^+ and x_t^- ([U] section 6.1).
        loss_bins: how many equal t-bins the epoch loss is also reported in (0 to turn off); the
            per-bin sums are kept on the device and logged once per epoch.
        compile: train through the backbone compiled with ``torch.compile`` (``fullgraph=True``: a graph
            break is an error, not a silent slowdown); True for the defaults, or a dict of ``torch.compile``
            keyword arguments (backend, mode, dynamic, ...). The state_dict keys do not change; the
            samplers (``fields``) use the eager backbone, whose batch sizes vary.
    """

    def __init__(
        self,
        backbone: nn.Module,
        interpolant: Interpolant | MultimarginalInterpolant | None = None,
        prediction: str = "velocity",
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        time_sampler: TimeSampler | None = None,
        reweight_time: bool = False,
        antithetic: bool = False,
        loss_bins: int = 4,
        compile: bool | dict[str, Any] = False,
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
        if getattr(self.prediction, "needs_latent_noise", False) and not self.interpolant.score_defined:
            raise ValueError(
                f"prediction {prediction!r} trains its score on the Gaussian part of x_t, which {self.interpolant!r} "
                "lacks: set the interpolant's gamma to a non-zero family (e.g. brownian or quadratic)"
            )
        self.training_seed: int | None = None  # seeds the training t and z (see training_noise)
        # Time grids fitted for this model after training (si_lightning.sampling.fit_lipschitz_grid, ...),
        # by name; they travel with the checkpoint: ODESampler(grid=model.sampling_grids["lipschitz"]).
        self.sampling_grids: dict[str, FittedGrid] = {}
        # A score-based prediction gives b only where the conversions are finite (both ends excluded).
        self.train_interval = self.interpolant.valid_interval(need_score=self.prediction.needs_score_interval)
        self.loss_bins = loss_bins
        # phase -> (loss_bins, 2): the sum of the per-sample losses and their count per t-bin this epoch.
        self._bin_totals: dict[str, Tensor] = {}
        self.compile_options = compile_options(compile)
        # The compiled backbone is kept outside the module tree: its parameters are the backbone's (no new
        # state_dict keys), and a copy of the backbone (the EMA's) stays an eager module of its own.
        compiled = None if self.compile_options is None else torch.compile(self.backbone, **self.compile_options)
        self.__dict__["compiled_backbone"] = compiled

    def _save_hyperparameters_for_reload(self, arguments: dict[str, Any]) -> None:
        """Save what ``load_from_checkpoint(path)`` needs to rebuild the model.

        Under LightningCLI the hyper-parameters are the parsed config (class paths and init args), so
        every argument is saved. In plain Python the backbone and the other objects are not
        serialisable with ``weights_only=True`` loading; they are left out and must be passed again:
        ``InterpolantModule.load_from_checkpoint(path, backbone=...)``.
        """
        objects = [name for name, value in arguments.items() if name not in ("self", "__class__")]
        ignore = [name for name in objects if not isinstance(arguments[name], (str, int, float, bool, type(None)))]
        self.save_hyperparameters(ignore=ignore)
        # Under LightningCLI save_hyperparameters saves the parsed config, marked with "_instantiator": the
        # checkpoint key Lightning's own load_from_checkpoint reads to rebuild the model from that config.
        # Reading it from the public ``hparams`` (part of the checkpoint format) instead of Lightning's
        # private context variable keeps this working across Lightning upgrades.
        if "_instantiator" in self.hparams:
            self.save_hyperparameters()

    @class_only_method
    def load_from_checkpoint(
        cls,
        checkpoint_path: str | os.PathLike | IO,
        map_location: Any = None,
        hparams_file: str | os.PathLike | None = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        **kwargs: Any,
    ) -> InterpolantModule:
        """Lightning's ``load_from_checkpoint``; a file that is no checkpoint gives one line naming it.

        Missing: FileNotFoundError. A text file, random bytes, a plain state_dict, or a pickle that needs
        a global outside torch's allowlist (named): CheckpointFileError (a ValueError) saying what was
        expected, instead of torch's multi-paragraph refusal. The file is examined only after a failure,
        and a readable Lightning checkpoint keeps its own error (a backbone that does not match, ...).
        """
        try:
            return super().load_from_checkpoint(
                checkpoint_path, map_location, hparams_file, strict, weights_only, **kwargs
            )
        except Exception:
            explanation = explain_unloadable_checkpoint(checkpoint_path, weights_only)
            if explanation is None:
                raise
        raise explanation

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
        for name in ("num_classes", "cond_channels", "system"):  # system: a free-energy energy head's
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
        if self.device.type == "cuda":
            optimizer = with_fused_kernels(optimizer)
        if self.scheduler_factory is None:
            return optimizer
        scheduler = self.scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # ------------------------------------------------------------------------------------ training
    def network(self, cond: Condition | None) -> Callable[[Tensor, Tensor], Tensor]:
        """The backbone as the (x_t, t) -> output callable the losses expect."""
        backbone = self.backbone if self.compiled_backbone is None else self.compiled_backbone
        return lambda x, t: backbone(x, t, cond)

    def forward(self, x: Tensor, t: Tensor, cond: Condition | None = None) -> Tensor:
        """The raw network output (batch, outputs * C, ...) at (x_t, t) (compiled with ``compile``)."""
        return self.network(cond)(x, t)

    def per_sample_loss(
        self, batch: Any, generator: torch.Generator | None = None, noise: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor, Tensor]:
        """(loss (batch,), t (batch,)) for a Batch(x0, x1, cond) from a coupling.

        t and z are ``noise`` when given, else drawn from ``generator`` (z left to the loss when None).
        """
        x0, x1, cond = batch.x0, batch.x1, batch.cond
        if noise is not None:
            t, z = noise
        else:
            t = self.time_sampler(x1.shape[0], self.train_interval, x1.device, x1.dtype, generator)
            z = None
            if generator is not None:
                z = torch.randn(x1.shape, generator=generator, device=x1.device, dtype=x1.dtype)
        network = self.network(cond)
        own_loss = getattr(self.interpolant, "training_loss", None)
        if own_loss is not None:  # an interpolant with its own objective (si_lightning.forecasting)
            return own_loss(network, x0, x1, t, z), t
        keep = self.known_pixels(cond)
        if keep is not None and self.prediction_name.startswith("velocity"):
            network = self._kept_pixels_fixed(network, cond)
        # A residual bridge puts noise only where the degradation may have changed the image: m = 1 - keep.
        modulation = None if keep is None or self.interpolant.gamma_family.is_zero else 1 - keep
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
            modulation=modulation,
        )
        if self.reweight_time:
            loss = loss * self.time_sampler.uniform_weight(t, self.train_interval)
        return loss, t

    def known_pixels(self, cond: Condition | None) -> Tensor | None:
        """``cond.keep`` (batch, 1, ...) when the interpolant never moves known pixels, else None.

        A bridge with noise on every pixel (bbdm, goub) moves known pixels too (x_t = x1 + gamma z there),
        so for it the mask is ignored; gamma = 0 and a residual-modulated bridge keep them (docs/math.md 8).
        """
        if cond is None or cond.keep is None or not self.interpolant.keeps_known_pixels:
            return None
        return cond.keep

    @staticmethod
    def _kept_pixels_fixed(network: Callable[[Tensor, Tensor], Tensor], cond: Condition) -> Callable:
        """The network with its velocity output zero on in-painting's kept pixels (``cond.keep`` = 1).

        There the target alpha' x0 + beta' x1 is zero (x0 = x1, linear interpolant), so the loss reads
        the hidden pixels only and the trained field never moves a known pixel.
        """
        return lambda x, t: mask_velocity(network(x, t), cond)

    def _log_bins(self, phase: str, loss: Tensor, t: Tensor) -> None:
        """Add the per-sample losses to their equal t-bin's sum and count, on the device.

        A few small kernels per step and no host sync; ``_log_epoch_bins`` logs the epoch means once
        per epoch (per-step ``self.log`` calls and metric updates cost more than the step of a small model).
        """
        if self.loss_bins == 0:
            return
        t_min, t_max = self.train_interval
        index = ((t.detach() - t_min) / (t_max - t_min) * self.loss_bins).long().clamp(0, self.loss_bins - 1)
        totals = self._bin_totals.get(phase)
        if totals is None or totals.device != loss.device:
            totals = self._bin_totals[phase] = torch.zeros(self.loss_bins, 2, device=loss.device)
        detached = loss.detach().float()
        totals.index_add_(0, index, torch.stack((detached, torch.ones_like(detached)), dim=1))

    def _log_epoch_bins(self, phase: str) -> None:
        """Log the epoch mean of the loss per t-bin (summed over DDP ranks; NaN for an empty bin), then reset."""
        if self.loss_bins == 0:
            return
        totals = self._bin_totals.pop(phase, None)
        if totals is None:  # every rank takes part in the reduction, also one that saw no batch
            totals = torch.zeros(self.loss_bins, 2, device=self.device)
        totals = self.trainer.strategy.reduce(totals, reduce_op="sum")
        means = totals[:, 0] / totals[:, 1]
        t_min, t_max = self.train_interval
        for bin_index in range(self.loss_bins):
            low = t_min + (t_max - t_min) * bin_index / self.loss_bins
            high = t_min + (t_max - t_min) * (bin_index + 1) / self.loss_bins
            self.log(f"{phase}/loss_t[{low:.2f},{high:.2f}]", means[bin_index], on_step=False, on_epoch=True)

    def on_train_epoch_start(self) -> None:
        self._bin_totals.pop("train", None)

    def on_train_epoch_end(self) -> None:
        self._log_epoch_bins("train")

    def on_validation_epoch_start(self) -> None:
        self._bin_totals.pop("val", None)

    def on_validation_epoch_end(self) -> None:
        self._log_epoch_bins("val")

    def on_train_start(self) -> None:
        """The seed of the training noise: the global seed of rank 0 (the same on every rank), unless restored."""
        if self.training_seed is None:
            self.training_seed = int(self.trainer.strategy.broadcast(torch.initial_seed())) % 2**63

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.training_seed = checkpoint.get("training_seed", self.training_seed)
        for name, state in checkpoint.get("sampling_grids", {}).items():
            grid = FittedGrid()
            grid.load_state_dict(state)
            self.sampling_grids[name] = grid

    def training_noise(self, x1: Tensor, batch_idx: int) -> tuple[Tensor, Tensor]:
        """(t (batch,), z like x1) of this device's part of the global batch ``batch_idx`` of this epoch.

        Drawn for the whole global batch (batch x world size) from one generator seeded by (seed, epoch,
        batch_idx), then sliced: the same values on any number of devices, and after a resume, with
        no generator state to save.
        """
        trainer = self._trainer
        world_size, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        batch, seed = x1.shape[0], self.training_seed if self.training_seed is not None else torch.initial_seed()
        generator = torch.Generator(device=x1.device)
        generator.manual_seed(derived_seed(seed, "time-and-noise", self.current_epoch, batch_idx))
        t = self.time_sampler(batch * world_size, self.train_interval, x1.device, x1.dtype, generator)
        z = torch.randn((batch * world_size, *x1.shape[1:]), generator=generator, device=x1.device, dtype=x1.dtype)
        part = slice(rank * batch, (rank + 1) * batch)
        return t[part], z[part]

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        loss, t = self.per_sample_loss(batch, noise=self.training_noise(batch.x1, batch_idx))
        mean = loss.mean()
        # For NonFiniteGuard: tensors only (no host sync); it reads them after backward.
        self.last_training_step = (mean.detach(), t.detach(), batch_idx)
        # The mean over the global batch (every rank's part), so 2 x B logs what 1 x 2B does; ranks hold equal parts.
        self.log("train/loss", mean, prog_bar=True, batch_size=t.shape[0], sync_dist=True)
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

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint with a non-finite weight (raw or EMA) or optimizer state before it is written.

        Lightning runs this after every callback has added its state (the EMA average included), so the
        whole checkpoint is checked; the last finite checkpoint on disk stays as it is.
        """
        check_finite_checkpoint(checkpoint, self._trainer)
        checkpoint["training_seed"] = self.training_seed
        checkpoint["sampling_grids"] = {name: grid.state_dict() for name, grid in self.sampling_grids.items()}

    # ------------------------------------------------------------------------------------ sampling
    def weights_backbone(self, ema: bool) -> nn.Module:
        """The backbone holding the EMA (``ema``) or raw weights now.

        During training the average lives in the EMA callback (si_lightning.callbacks.EMA), which is
        asked (``averaged_network``/``raw_network``); it is swapped into the module during validation
        and copied in when training ends. With no such callback the module's own weights are used (a
        checkpoint's ``state_dict`` is the average).
        """
        trainer = self._trainer
        callbacks: Iterable[Any] = trainer.callbacks if trainer is not None else ()
        for callback in callbacks:
            if hasattr(callback, "averaged_network"):
                return callback.averaged_network(self) if ema else callback.raw_network(self)
        return self.backbone

    def fields(
        self,
        ema: bool = True,
        guidance_scale: float | None = None,
        guidance_interval: tuple[float, float] | None = None,
    ) -> Fields:
        """Sampler-ready Fields (velocity and score) from the trained network, EMA weights by default.

        Classifier-free guidance with w = ``guidance_scale`` (on ``guidance_interval`` of t only, if
        given); the velocity is zero on pixels a condition marks as known (``cond.keep``, in-painting), and an
        SDE adds no noise there, unless the interpolant moves them (a bridge with unmodulated noise).
        """
        backbone = self.weights_backbone(ema)
        fields = NetworkFields(
            network=lambda x, t, cond=None: backbone(x, t, cond),
            interpolant=self.interpolant,
            prediction=self.prediction_name,
        )
        if callable(getattr(backbone, "correction", None)):  # a learned energy interpolant (free energies)
            from si_lightning.free_energy.head import EnergyInterpolantFields  # free_energy imports sampling

            fields = EnergyInterpolantFields(fields, backbone)
        if guidance_scale is not None:
            num_classes = getattr(backbone, "num_classes", 0)
            fields = GuidedFields(fields, guidance_scale, null_label=num_classes, interval=guidance_interval)
        return KeptPixelFields(fields) if self.interpolant.keeps_known_pixels else fields


def compile_options(setting: bool | dict[str, Any]) -> dict[str, Any] | None:
    """The ``torch.compile`` keyword arguments for the ``compile`` setting (None: do not compile)."""
    if setting is False:
        return None
    if setting is True:
        return {"fullgraph": True}
    if isinstance(setting, dict):
        return {"fullgraph": True, **setting}
    raise ValueError(f"compile must be true, false or a dict of torch.compile arguments, got {setting!r}")


def with_fused_kernels(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The same Adam/AdamW/SGD with ``fused=True`` (one kernel for all parameters), if it was built with
    neither ``fused`` nor ``foreach`` chosen and before its first step; any other optimizer as is."""
    fusable = isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW, torch.optim.SGD))
    defaults = optimizer.defaults
    chosen = defaults.get("fused") is not None or defaults.get("foreach") is not None
    if not fusable or chosen or optimizer.state or defaults.get("differentiable"):
        return optimizer
    accepted = inspect.signature(type(optimizer)).parameters  # AdamW keeps a default it does not accept
    settings = {key: value for key, value in defaults.items() if key in accepted}
    groups = [{**group, "fused": True} for group in optimizer.param_groups]
    return type(optimizer)(groups, **{**settings, "fused": True})
