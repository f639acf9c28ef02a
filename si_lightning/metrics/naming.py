"""Logged metric names: the sampler and the sample count N are part of every name.

FID depends on N (FID at N = 2,000 is not FID-50k) and on the sampler, so both are in the key:
``metric_name("fid", "ode-dopri5", 2000) == "fid/ode-dopri5/n2000"``. The sampler's number of
function evaluations is logged under its own key, ``nfe/ode-dopri5/n2000``, rather than in the
name: an adaptive solver's NFE changes from one evaluation to the next, and a name containing it
would split one curve into many. FID, KID and IS mean Inception features by definition; any other
extractor is named in the metric (``fid-digits/...``) so its values are never read as FID.
"""

from __future__ import annotations

from collections.abc import Mapping

from si_lightning.checks import is_integer

STANDARD_EXTRACTOR = "inception"


def metric_name(metric: str, sampler: str, num_samples: int, extractor: str = STANDARD_EXTRACTOR) -> str:
    """``"{metric}/{sampler}/n{num_samples}"``, with ``-{extractor}`` after the metric unless it is Inception."""
    for label, value in (("metric", metric), ("sampler", sampler), ("extractor", extractor)):
        if not isinstance(value, str) or not value or "/" in value:
            raise ValueError(f"{label} must be a non-empty string without '/'; got {value!r}")
    if not is_integer(num_samples) or num_samples < 2:
        raise ValueError(f"num_samples must be an integer >= 2; got {num_samples!r}")
    qualified = metric if extractor == STANDARD_EXTRACTOR else f"{metric}-{extractor}"
    return f"{qualified}/{sampler}/n{num_samples}"


def metric_logs(
    values: Mapping[str, float],
    sampler: str,
    num_samples: int,
    nfe: float | None = None,
    extractor: str = STANDARD_EXTRACTOR,
) -> dict[str, float]:
    """Loggable dict: each ``values[metric]`` under `metric_name`, plus ``nfe/{sampler}/n{N}`` when ``nfe`` is given."""
    logs = {metric_name(metric, sampler, num_samples, extractor): float(value) for metric, value in values.items()}
    if nfe is not None:
        logs[metric_name("nfe", sampler, num_samples)] = float(nfe)
    return logs
