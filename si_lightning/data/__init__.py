"""LightningDataModules that hand the module coupled batches Batch(x0, x1, cond)."""

from si_lightning.data.base import CoupledDataModule
from si_lightning.data.digits import DigitsDataModule
from si_lightning.data.free_energy import FreeEnergyDataModule
from si_lightning.data.images import IMAGE_DATASETS, ImageDataModule
from si_lightning.data.kolmogorov import KolmogorovFlowDataModule
from si_lightning.data.latents import LatentDataModule
from si_lightning.data.multimarginal import MARGINAL_TRANSFORMS, MultimarginalBatch, MultimarginalDataModule
from si_lightning.data.toys import TOYS, ToyDataModule, ToyDistribution

__all__ = [
    "IMAGE_DATASETS",
    "MARGINAL_TRANSFORMS",
    "TOYS",
    "CoupledDataModule",
    "DigitsDataModule",
    "FreeEnergyDataModule",
    "ImageDataModule",
    "KolmogorovFlowDataModule",
    "LatentDataModule",
    "MultimarginalBatch",
    "MultimarginalDataModule",
    "ToyDataModule",
    "ToyDistribution",
]
