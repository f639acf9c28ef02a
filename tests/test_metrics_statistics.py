"""The real-statistics cache: round trip, atomic writes, corruption detection, feature size checks."""

from __future__ import annotations

import warnings

import pytest
import torch

import si_lightning.metrics.statistics as statistics_module
from si_lightning.metrics import FeatureStatistics, StatisticsCache, StatisticsKey, feature_mean_and_covariance

KEY = StatisticsKey(dataset="digits", split="train", extractor="digits-0123456789abcdef", num_samples=50)


def make_statistics(dim: int = 6, num: int = 50, seed: int = 0, keep_features: bool = False) -> FeatureStatistics:
    features = torch.randn(num, dim, generator=torch.Generator().manual_seed(seed))
    return FeatureStatistics.from_features(features, keep_features=keep_features)


class CountingCompute:
    def __init__(self, statistics: FeatureStatistics) -> None:
        self.statistics, self.calls = statistics, 0

    def __call__(self) -> FeatureStatistics:
        self.calls += 1
        return self.statistics


def assert_same(loaded: FeatureStatistics, expected: FeatureStatistics) -> None:
    assert torch.equal(loaded.mean, expected.mean) and torch.equal(loaded.covariance, expected.covariance)
    assert loaded.num_samples == expected.num_samples
    assert (loaded.features is None) == (expected.features is None)
    if expected.features is not None:
        assert torch.equal(loaded.features, expected.features)


def test_from_features_matches_mean_and_unbiased_covariance() -> None:
    features = torch.randn(50, 6, generator=torch.Generator().manual_seed(0))
    statistics = FeatureStatistics.from_features(features)
    mean, covariance = feature_mean_and_covariance(features)
    assert torch.allclose(statistics.covariance, torch.cov(features.T.double()), rtol=1e-12, atol=1e-14)
    assert torch.equal(statistics.mean, mean) and statistics.num_samples == 50 and statistics.feature_dim == 6


@pytest.mark.parametrize("keep_features", [False, True])
def test_round_trip_and_compute_once(tmp_path, keep_features: bool) -> None:
    cache = StatisticsCache(tmp_path / "stats")
    expected = make_statistics(keep_features=keep_features)
    compute = CountingCompute(expected)
    first = cache.get_or_compute(KEY, compute, feature_dim=6, need_features=keep_features)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a valid file must load silently
        second = cache.get_or_compute(KEY, compute, feature_dim=6, need_features=keep_features)
    assert compute.calls == 1
    assert_same(first, expected)
    assert_same(second, expected)
    assert cache.path(KEY).name == f"feature-statistics-{KEY.digest()[:32]}.pt"
    assert sorted(path.name for path in cache.directory.iterdir()) == [cache.path(KEY).name]


def test_key_fields_all_change_the_file() -> None:
    cache = StatisticsCache("unused")
    variants = [
        KEY,
        StatisticsKey("cifar10", "train", KEY.extractor, 50),
        StatisticsKey("digits", "test", KEY.extractor, 50),
        StatisticsKey("digits", "train", "inception-fedcba9876543210", 50),
        StatisticsKey("digits", "train", KEY.extractor, 2000),
    ]
    assert len({cache.path(key) for key in variants}) == len(variants)


def test_missing_features_are_recomputed_when_needed(tmp_path) -> None:
    cache = StatisticsCache(tmp_path)
    cache.save(KEY, make_statistics(keep_features=False))
    compute = CountingCompute(make_statistics(keep_features=True))
    loaded = cache.get_or_compute(KEY, compute, feature_dim=6, need_features=True)
    assert compute.calls == 1 and loaded.features is not None and loaded.features.shape == (50, 6)


def test_failed_write_leaves_no_partial_file(tmp_path, monkeypatch) -> None:
    cache = StatisticsCache(tmp_path)
    original = make_statistics(seed=0)
    cache.save(KEY, original)

    def failing_save(payload, file) -> None:
        file.write(b"PK\x03\x04 partial")  # a torch zip header, then the process "dies"
        raise OSError("disk full")

    monkeypatch.setattr(statistics_module.torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        cache.save(KEY, make_statistics(seed=1))
    other_key = StatisticsKey("digits", "test", KEY.extractor, 50)
    with pytest.raises(OSError, match="disk full"):
        cache.save(other_key, make_statistics(seed=1))
    monkeypatch.undo()
    assert sorted(path.name for path in tmp_path.iterdir()) == [cache.path(KEY).name]  # no temporary files left
    assert not cache.path(other_key).exists()
    assert_same(cache.load(KEY, feature_dim=6), original)  # the previous file is intact


def test_checksum_detects_silent_corruption_and_recomputes(tmp_path) -> None:
    cache = StatisticsCache(tmp_path)
    expected = make_statistics()
    cache.save(KEY, expected)
    payload = torch.load(cache.path(KEY), weights_only=True)
    payload["mean"][2] += 1e-9  # a flipped low bit: still a readable file with the old checksum
    torch.save(payload, cache.path(KEY))
    compute = CountingCompute(expected)
    with pytest.warns(UserWarning, match="checksum"):
        recomputed = cache.get_or_compute(KEY, compute, feature_dim=6)
    assert compute.calls == 1
    assert_same(recomputed, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert_same(cache.load(KEY, feature_dim=6), expected)  # rewritten intact


def test_unreadable_file_is_recomputed_with_a_warning(tmp_path) -> None:
    cache = StatisticsCache(tmp_path)
    cache.save(KEY, make_statistics())
    content = cache.path(KEY).read_bytes()
    cache.path(KEY).write_bytes(content[: len(content) // 2])  # truncated
    compute = CountingCompute(make_statistics())
    with pytest.warns(UserWarning, match="unreadable"):
        cache.get_or_compute(KEY, compute, feature_dim=6)
    assert compute.calls == 1


def test_file_of_another_key_is_recomputed_with_a_warning(tmp_path) -> None:
    cache = StatisticsCache(tmp_path)
    other_key = StatisticsKey("digits", "test", KEY.extractor, 50)
    cache.save(other_key, make_statistics())
    cache.path(other_key).rename(cache.path(KEY))
    with pytest.warns(UserWarning, match="was written for key"):
        assert cache.load(KEY, feature_dim=6) is None


def test_feature_size_mismatch_is_an_error(tmp_path) -> None:
    cache = StatisticsCache(tmp_path)
    cache.save(KEY, make_statistics(dim=6))
    with pytest.raises(ValueError, match="6-d features.*produces 2048-d"):
        cache.get_or_compute(KEY, CountingCompute(make_statistics(dim=2048)), feature_dim=2048)


def test_bad_keys_and_statistics_are_rejected(tmp_path) -> None:
    with pytest.raises(ValueError, match="num_samples"):
        StatisticsKey("digits", "train", "digits", 1)
    with pytest.raises(ValueError, match="dataset"):
        StatisticsKey("", "train", "digits", 10)
    with pytest.raises(ValueError, match="N = 1"):
        FeatureStatistics.from_features(torch.randn(1, 6))
    with pytest.raises(ValueError, match="num_samples = 50"):
        StatisticsCache(tmp_path).save(KEY, make_statistics(num=40))
