"""Real-data feature statistics and their on-disk cache.

Real statistics depend only on (dataset, split, extractor, N), so they are computed once and
stored under a hash of that key. Each file carries a SHA-256 checksum of its content: a file that
is unreadable, fails the checksum or was written for another key is reported with a warning and
recomputed. Files are written atomically (temporary file in the same directory, then
``os.replace``), so concurrent writers (several ranks) and interrupted runs never leave a partial
file under the final name. Files are read with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from os import PathLike
from pathlib import Path

import torch
from torch import Tensor

from si_lightning.checks import is_integer
from si_lightning.files import write_atomically
from si_lightning.metrics.frechet import feature_mean_and_covariance

CACHE_FORMAT = 1


@dataclass(frozen=True)
class StatisticsKey:
    """What real statistics depend on. ``extractor`` should be `FeatureExtractor.identity()` (name + weights digest)."""

    dataset: str
    split: str
    extractor: str
    num_samples: int

    def __post_init__(self) -> None:
        for field in ("dataset", "split", "extractor"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value:
                raise ValueError(f"StatisticsKey.{field} must be a non-empty string; got {value!r}")
        if not is_integer(self.num_samples) or self.num_samples < 2:
            raise ValueError(f"StatisticsKey.num_samples must be an integer >= 2; got {self.num_samples!r}")

    def digest(self) -> str:
        """SHA-256 of the key's canonical JSON."""
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class FeatureStatistics:
    """Mean (D,) and unbiased covariance (D, D), float64, of N features; optionally the (N, D) features (for KID)."""

    mean: Tensor
    covariance: Tensor
    num_samples: int
    features: Tensor | None = None

    def __post_init__(self) -> None:
        dim = self.mean.shape[0] if self.mean.dim() == 1 else None
        if dim is None or tuple(self.covariance.shape) != (dim, dim):
            raise ValueError(
                f"FeatureStatistics needs mean (D,) and covariance (D, D); got {tuple(self.mean.shape)} "
                f"and {tuple(self.covariance.shape)}"
            )
        if self.num_samples < 2:
            raise ValueError(f"FeatureStatistics needs num_samples >= 2; got {self.num_samples}")
        if self.features is not None and tuple(self.features.shape) != (self.num_samples, dim):
            raise ValueError(
                f"FeatureStatistics.features must be ({self.num_samples}, {dim}); got {tuple(self.features.shape)}"
            )

    @property
    def feature_dim(self) -> int:
        return self.mean.shape[0]

    @classmethod
    def from_features(cls, features: Tensor, keep_features: bool = False) -> FeatureStatistics:
        """Statistics of (N, D) features (N >= 2); ``keep_features`` stores them as float32 for KID."""
        mean, covariance = feature_mean_and_covariance(features)
        kept = features.detach().to("cpu", torch.float32).clone() if keep_features else None
        return cls(mean.cpu(), covariance.cpu(), features.shape[0], kept)


def _checksum(metadata: dict, tensors: dict[str, Tensor | None]) -> str:
    digest = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode())
    for name in sorted(tensors):
        tensor = tensors[name]
        digest.update(name.encode())
        if tensor is not None:
            digest.update(f"{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class StatisticsCache:
    """Directory of real-data feature statistics, one file per `StatisticsKey`."""

    def __init__(self, directory: str | PathLike) -> None:
        self.directory = Path(directory).expanduser()

    def path(self, key: StatisticsKey) -> Path:
        return self.directory / f"feature-statistics-{key.digest()[:32]}.pt"

    def save(self, key: StatisticsKey, statistics: FeatureStatistics) -> Path:
        """Write ``statistics`` under ``key`` atomically; returns the file's path."""
        if statistics.num_samples != key.num_samples:
            raise ValueError(
                f"statistics of N = {statistics.num_samples} features cannot be stored under a key with "
                f"num_samples = {key.num_samples}"
            )
        metadata = {
            "format": CACHE_FORMAT,
            "key": dataclasses.asdict(key),
            "feature_dim": statistics.feature_dim,
            "num_samples": statistics.num_samples,
        }
        tensors = {
            "mean": statistics.mean.detach().to("cpu", torch.float64).contiguous(),
            "covariance": statistics.covariance.detach().to("cpu", torch.float64).contiguous(),
            "features": None if statistics.features is None else statistics.features.detach().cpu().contiguous(),
        }
        payload = {**metadata, **tensors, "checksum": _checksum(metadata, tensors)}
        path = self.path(key)
        buffer = io.BytesIO()
        torch.save(payload, buffer)
        write_atomically(path, buffer.getvalue())
        return path

    def load(self, key: StatisticsKey, feature_dim: int) -> FeatureStatistics | None:
        """Cached statistics for ``key``, or None when absent or invalid (invalid files are reported by a warning).

        Raises a ValueError when a valid file holds features of a size other than ``feature_dim``.
        """
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            warnings.warn(f"feature statistics cache {str(path)!r} is unreadable ({error}); recomputing", stacklevel=2)
            return None
        problem = _validate(payload, key)
        if problem is not None:
            warnings.warn(f"feature statistics cache {str(path)!r} {problem}; recomputing", stacklevel=2)
            return None
        if payload["feature_dim"] != feature_dim:
            raise ValueError(
                f"feature statistics cache {str(path)!r} holds {payload['feature_dim']}-d features but the extractor "
                f"{key.extractor!r} produces {feature_dim}-d features; delete the file or use another cache directory"
            )
        return FeatureStatistics(payload["mean"], payload["covariance"], payload["num_samples"], payload["features"])

    def get_or_compute(
        self,
        key: StatisticsKey,
        compute: Callable[[], FeatureStatistics],
        feature_dim: int,
        need_features: bool = False,
    ) -> FeatureStatistics:
        """Cached statistics for ``key``; on a miss (or ``need_features`` and none stored) ``compute()`` and save."""
        statistics = self.load(key, feature_dim)
        if statistics is not None and (statistics.features is not None or not need_features):
            return statistics
        statistics = compute()
        if statistics.feature_dim != feature_dim:
            raise ValueError(f"computed statistics have D = {statistics.feature_dim}; expected {feature_dim}")
        if need_features and statistics.features is None:
            raise ValueError("need_features=True but compute() returned statistics without features")
        self.save(key, statistics)
        return statistics


def _validate(payload: object, key: StatisticsKey) -> str | None:
    """None when ``payload`` is an intact cache entry for ``key``, else what is wrong with it."""
    fields = ("format", "key", "feature_dim", "num_samples", "mean", "covariance", "features", "checksum")
    if not isinstance(payload, dict) or any(field not in payload for field in fields):
        return "is not a feature statistics file"
    if not all(isinstance(payload[field], Tensor) for field in ("mean", "covariance")) or not isinstance(
        payload["features"], (Tensor, type(None))
    ):
        return "does not hold tensors where expected"
    if payload["format"] != CACHE_FORMAT:
        return f"has format {payload['format']!r}, expected {CACHE_FORMAT}"
    metadata = {field: payload[field] for field in ("format", "key", "feature_dim", "num_samples")}
    tensors = {field: payload[field] for field in ("mean", "covariance", "features")}
    if _checksum(metadata, tensors) != payload["checksum"]:
        return "fails its checksum (corrupted)"
    if payload["key"] != dataclasses.asdict(key):
        return f"was written for key {payload['key']}, not {dataclasses.asdict(key)}"
    return None
