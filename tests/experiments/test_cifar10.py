"""The CIFAR-10 experiment: the DDPM++-size UNet has the parameter count its config states; the smoke variant."""

from __future__ import annotations

import json
import math
import re

import pytest

from si_lightning.cli import build_cli
from si_lightning.nn import count_parameters
from tests.experiments.test_smoke import EXPERIMENTS, run
from tests.test_data import write_cifar

CONFIGS = EXPERIMENTS.parent / "configs"


@pytest.mark.timeout(300)
def test_unet_cifar_builds_the_parameter_count_its_config_states(tmp_path, monkeypatch) -> None:
    """The backbone built from configs/backbone/unet-cifar.yaml, as the experiment builds it, has the exact
    count its comment states, and the differences the comment gives to the published DDPM++ counts hold."""
    config = (CONFIGS / "backbone" / "unet-cifar.yaml").read_text()
    stated = re.search(r"^# DDPM\+\+-size UNet for 32x32 images: ([\d,]+) parameters \(([\d.]+)M\)", config, re.M)
    assert stated is not None, "the config's first line states its parameter count"
    count = int(stated.group(1).replace(",", ""))
    assert float(stated.group(2)) == round(count / 1e6, 1)
    comment = " ".join(line.lstrip("# ") for line in config.splitlines() if line.startswith("#"))
    published = re.findall(r"([\d,]+) \([\d.]+M\), ([\d.]+)M \((\d+) %\) (more|fewer)", comment)
    assert len(published) == 2, comment  # Song et al.'s DDPM++ and EDM's, each with its difference to this one
    for other, difference, percent, direction in published:
        other_count = int(other.replace(",", ""))
        assert float(difference) == round(abs(other_count - count) / 1e6, 1)
        assert int(percent) == round(100 * abs(other_count - count) / count)
        assert direction == ("more" if other_count > count else "fewer")
    monkeypatch.chdir(tmp_path)
    write_cifar(tmp_path / "cifar", per_batch=4)
    arguments = ["-c", str(CONFIGS / "trainer.yaml"), "-c", str(CONFIGS / "data" / "cifar10.yaml")]
    arguments += [
        "-c",
        str(CONFIGS / "backbone" / "unet-cifar.yaml"),
        "-c",
        str(CONFIGS / "interpolant" / "linear.yaml"),
    ]
    arguments += ["-c", str(EXPERIMENTS / "cifar10" / "train.yaml"), "--trainer.logger", "false"]
    arguments += ["--data.init_args.root", str(tmp_path / "cifar")]
    cli = build_cli(arguments, run=False)
    assert count_parameters(cli.model.backbone) == count


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cifar10_smoke(tmp_path) -> None:
    write_cifar(tmp_path / "cifar", per_batch=8, test_count=4)
    out = tmp_path / "runs"
    run(
        [str(EXPERIMENTS / "cifar10" / "run.sh"), "-c", str(EXPERIMENTS / "cifar10" / "smoke.yaml")]
        + ["--data.init_args.root", str(tmp_path / "cifar")],
        800,
        OUT=str(out),
        NUM="6",
        NUM_REAL="6",
        BATCH="3",
        SAMPLERS="ode-euler-2 sde-euler-sigma-2",
        METRICS="fid",
        EXTRA_EVALUATE="--extractor digits",
    )
    for sampler in ("ode-euler-2", "sde-euler-sigma-2"):
        values = json.loads((out / f"evaluation-{sampler}" / "evaluation.json").read_text())["values"]
        assert math.isfinite(values["fid"]) and values["fid"] > 0
