"""MultimarginalModule: one backbone conditioned on alpha learns g_0 .. g_{K-1} and eta (docs/math.md section 12).

It is what ``InterpolantModule(interpolant=MultimarginalInterpolant(...), ...)`` builds (the command line's
model section stays the same), so ``si-lightning fit`` trains it from a config whose interpolant is a
``MultimarginalInterpolant`` and whose data is a ``MultimarginalDataModule``. Sampling is along a route on
the simplex (``simplex_fields`` + ``si_lightning.sampling.translate``), not in t.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch.cli import LRSchedulerCallable, OptimizerCallable
from torch import Tensor, nn

from si_lightning.condition import Condition
from si_lightning.interpolants import Interpolant, TimeSampler
from si_lightning.interpolants.multimarginal import MultimarginalInterpolant, multimarginal_loss
from si_lightning.interpolants.simplex_paths import EdgePath
from si_lightning.module import InterpolantModule, compile_options
from si_lightning.sampling import Fields
from si_lightning.sampling.multimarginal import NetworkSimplexFields, PathFields, SimplexFields
from si_lightning.seeding import derived_seed


class MultimarginalModule(InterpolantModule):
    """Trains ``backbone(x, alpha, cond)`` to emit [g_0, .., g_{K-1}, eta] for a ``MultimarginalInterpolant``.

    Args:
        backbone: a UNet or DiT built with ``num_marginals = K`` and ``out_channels = outputs x C``
            (``interpolant.outputs`` is K, plus 1 for eta when gamma is not zero).
        interpolant: the ``MultimarginalInterpolant``; its ``alpha_sampler`` draws the training alpha.
        optimizer, lr_scheduler, compile: as for ``InterpolantModule``.
        prediction, time_sampler, reweight_time, antithetic, loss_bins: the two-marginal settings, accepted
            so that the command line's model section is shared; any value but the default is refused
            (the fields and the alpha density are fixed by the interpolant).
    """

    def __init__(
        self,
        backbone: nn.Module,
        interpolant: MultimarginalInterpolant | Interpolant | None = None,
        prediction: str = "velocity",
        optimizer: OptimizerCallable = torch.optim.AdamW,
        lr_scheduler: LRSchedulerCallable | None = None,
        time_sampler: TimeSampler | None = None,
        reweight_time: bool = False,
        antithetic: bool = False,
        loss_bins: int = 4,
        compile: bool | dict[str, Any] = False,
    ) -> None:
        super(InterpolantModule, self).__init__()  # the two-marginal set-up of InterpolantModule does not apply
        self._save_hyperparameters_for_reload(locals())
        if not isinstance(interpolant, MultimarginalInterpolant):
            raise ValueError(f"interpolant must be a MultimarginalInterpolant, got {type(interpolant).__name__}")
        for name, value, default in (
            ("prediction", prediction, "velocity"),
            ("time_sampler", time_sampler, None),
            ("reweight_time", reweight_time, False),
            ("antithetic", antithetic, False),
        ):
            if value != default:
                raise ValueError(
                    f"{name} = {value!r} does not apply to a multimarginal model (it learns g_k and eta at alpha "
                    f"drawn by the interpolant's alpha_sampler); leave it unset"
                )
        self.backbone = backbone
        self.interpolant = interpolant
        self.prediction_name = "multimarginal"
        self.optimizer_factory = optimizer
        self.scheduler_factory = lr_scheduler
        self.loss_bins = 0  # losses are not binned in t: there is no t
        self.check_backbone_outputs()
        self.training_seed: int | None = None
        self.sampling_grids = {}
        self._bin_totals: dict[str, Tensor] = {}
        self.compile_options = compile_options(compile)
        compiled = None if self.compile_options is None else torch.compile(self.backbone, **self.compile_options)
        self.__dict__["compiled_backbone"] = compiled

    def check_backbone_outputs(self) -> None:
        """The backbone must take alpha (num_marginals = K) and emit ``interpolant.outputs`` fields."""
        interpolant = self.interpolant
        marginals = getattr(self.backbone, "num_marginals", None)
        if marginals is not None and marginals != interpolant.num_marginals:
            raise ValueError(
                f"the backbone takes num_marginals = {marginals} but the interpolant has "
                f"num_marginals = {interpolant.num_marginals}; set the backbone's num_marginals to match"
            )
        data_shape = getattr(self.backbone, "data_shape", None)
        out_channels = getattr(self.backbone, "out_channels", None)
        if data_shape is None or out_channels is None:
            return
        expected = interpolant.outputs * data_shape[0]
        if out_channels != expected:
            raise ValueError(
                f"a multimarginal model with {interpolant.num_marginals} marginals"
                f"{' and gamma' if interpolant.has_denoiser else ''} needs a backbone with out_channels = "
                f"{expected} ({interpolant.outputs} x {data_shape[0]} data channels), got out_channels = {out_channels}"
            )

    def setup(self, stage: str) -> None:
        """The data's shape and marginal count must be the backbone's and the interpolant's."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is None:
            return
        count = getattr(datamodule, "num_marginals", None)
        if count is None:
            raise ValueError(f"a multimarginal model needs a MultimarginalDataModule, got {type(datamodule).__name__}")
        if count != self.interpolant.num_marginals:
            raise ValueError(
                f"the data has {count} marginals but the interpolant num_marginals = {self.interpolant.num_marginals}"
            )
        if datamodule.gaussian_base != self.interpolant.gaussian_base:
            raise ValueError(f"the interpolant's gaussian_base must be the data's ({datamodule.gaussian_base})")
        data_shape, backbone_shape = tuple(datamodule.data_shape), tuple(getattr(self.backbone, "data_shape", ()))
        if backbone_shape and data_shape != backbone_shape:
            raise ValueError(
                f"the data has shape {data_shape} but the backbone was built for {backbone_shape}; "
                f"set the backbone's data_shape to {data_shape}"
            )

    # ------------------------------------------------------------------------------------ training
    def network(self, cond: Condition | None):
        """The backbone as the (x, alpha) -> output callable of ``multimarginal_loss``."""
        backbone = self.backbone if self.compiled_backbone is None else self.compiled_backbone
        return lambda x, alpha: backbone(x, alpha, cond)

    def draw_alpha_and_noise(self, reference: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """(alpha (batch, K), z like ``reference``) from ``generator``."""
        interpolant = self.interpolant
        alpha = interpolant.alpha_sampler(
            reference.shape[0], interpolant.num_marginals, reference.device, reference.dtype, generator
        )
        z = torch.randn(reference.shape, generator=generator, device=reference.device, dtype=reference.dtype)
        return alpha, z

    def per_sample_loss(self, batch: Any, generator: torch.Generator) -> Tensor:
        """Loss (batch,) of a MultimarginalBatch with alpha and z drawn from ``generator``."""
        alpha, z = self.draw_alpha_and_noise(batch.xs[0], generator)
        return multimarginal_loss(self.interpolant, self.network(batch.cond), batch.xs, alpha, z, check_alpha=False)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        # alpha and z from (seed, epoch, batch): the same after a resume, with no generator state to save.
        reference = batch.xs[0]
        seed = self.training_seed if self.training_seed is not None else torch.initial_seed()
        generator = torch.Generator(device=reference.device)
        generator.manual_seed(derived_seed(seed, "alpha-and-noise", self.current_epoch, batch_idx, self.global_rank))
        mean = self.per_sample_loss(batch, generator).mean()
        self.last_training_step = (mean.detach(), torch.zeros(reference.shape[0], device=reference.device), batch_idx)
        self.log("train/loss", mean, prog_bar=True, batch_size=reference.shape[0], sync_dist=True)
        return mean

    def validation_step(self, batch: Any, batch_idx: int) -> Tensor:
        generator = torch.Generator(device=batch.xs[0].device).manual_seed(batch_idx)
        mean = self.per_sample_loss(batch, generator).mean()
        self.log("val/loss", mean, prog_bar=True, batch_size=batch.xs[0].shape[0], sync_dist=True)
        return mean

    def test_step(self, batch: Any, batch_idx: int) -> Tensor:
        generator = torch.Generator(device=batch.xs[0].device).manual_seed(batch_idx)
        mean = self.per_sample_loss(batch, generator).mean()
        self.log("test/loss", mean, batch_size=batch.xs[0].shape[0], sync_dist=True)
        return mean

    # ------------------------------------------------------------------------------------ sampling
    def simplex_fields(self, ema: bool = True) -> SimplexFields:
        """g and eta of the trained network (EMA weights by default), for ``translate`` along a route."""
        backbone = self.weights_backbone(ema)
        return NetworkSimplexFields(lambda x, alpha, cond=None: backbone(x, alpha, cond), self.interpolant)

    def path_fields(self, start: int, end: int, ema: bool = True) -> PathFields:
        """``Fields`` on the edge from vertex ``start`` to ``end`` (s in the place of t)."""
        return PathFields(self.simplex_fields(ema), EdgePath(self.interpolant.num_marginals, start, end))

    def fields(self, ema: bool = True, guidance_scale: float | None = None, guidance_interval=None) -> Fields:
        """The generation fields: the edge from the Gaussian vertex 0 to vertex 1 (``path_fields`` for others)."""
        if guidance_scale is not None:
            raise ValueError("guidance_scale does not apply: a multimarginal model is not class-conditional")
        if not self.interpolant.gaussian_base:
            raise ValueError("vertex 0 is not the Gaussian base: use path_fields(start, end) with data inputs")
        return self.path_fields(0, 1, ema)
