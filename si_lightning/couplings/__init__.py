"""Couplings nu(x0, x1): how the base point x0 is paired with a data point x1 (docs/math.md section 6).

A coupling turns a batch of data x1 (and its class labels) into ``Batch(x0, x1, cond)``:

    x0 = m(x1) + sigma zeta,   zeta ~ N(0, I)

with m = 0, sigma = 1 for the independent Gaussian base and a data-dependent m for
super-resolution and in-painting ([C]) and the restoration degradations of the bridges (denoising, blur,
rain; degradations.py), which mark the pixels they left untouched in ``cond.keep``. ``cond`` (a
``Condition``) carries what the network sees besides (x_t, t): extra input channels and class labels.
Each coupling declares

- ``gaussian_base``: x0 ~ N(0, I) independently of x1 (the interpolant's conversions need it);
- ``cond_channels(data_channels)``: how many channels ``cond.channels`` has;
- ``num_classes``: the number of class labels (0 if none; ``num_classes`` itself is the null label),

so data and backbone can be linked by the CLI. ``MinibatchOT`` re-pairs a Gaussian base with the
data of a batch by an optimal-transport plan. Plain PyTorch (and scipy): no Lightning here.
"""

from __future__ import annotations

from si_lightning.checks import lookup
from si_lightning.couplings.base import Batch, Coupling, IndependentCoupling
from si_lightning.couplings.degradations import Blur, Degradation, Denoising, Rain, floor_untouched, gaussian_filter
from si_lightning.couplings.forecast import NextState
from si_lightning.couplings.images import UPSAMPLING_MODES, Inpainting, SuperResolution, mask_velocity
from si_lightning.couplings.labels import ClassLabels
from si_lightning.couplings.masks import MASKS, BoxMask, MaskGenerator, StrokeMask, TileMask, get_mask
from si_lightning.couplings.pool import SampledBase
from si_lightning.couplings.transport import OT_METHODS, MinibatchOT

__all__ = [
    "COUPLINGS",
    "MASKS",
    "OT_METHODS",
    "UPSAMPLING_MODES",
    "Batch",
    "Blur",
    "BoxMask",
    "ClassLabels",
    "Coupling",
    "Degradation",
    "Denoising",
    "IndependentCoupling",
    "Inpainting",
    "MaskGenerator",
    "MinibatchOT",
    "NextState",
    "Rain",
    "SampledBase",
    "StrokeMask",
    "SuperResolution",
    "TileMask",
    "floor_untouched",
    "gaussian_filter",
    "get_coupling",
    "get_mask",
    "mask_velocity",
]

COUPLINGS: dict[str, type[Coupling]] = {
    "independent": IndependentCoupling,
    "super-resolution": SuperResolution,
    "inpainting": Inpainting,
    "class-labels": ClassLabels,
    "minibatch-ot": MinibatchOT,
    "next-state": NextState,
    "denoising": Denoising,
    "blur": Blur,
    "rain": Rain,
}


def get_coupling(name: str, **settings) -> Coupling:
    """The coupling registered as ``name`` (see COUPLINGS), built with ``settings``."""
    return lookup(COUPLINGS, name, "coupling")(**settings)
