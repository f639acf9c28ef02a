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
DDPMPP_PARAMETERS = 57_443_075


@pytest.mark.timeout(300)
def test_unet_cifar_builds_the_parameter_count_its_config_states(tmp_path, monkeypatch) -> None:
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
    assert count_parameters(cli.model.backbone) == DDPMPP_PARAMETERS
    stated = re.search(r"([\d.]+)M parameters", (CONFIGS / "backbone" / "unet-cifar.yaml").read_text())
    assert stated is not None and float(stated.group(1)) == round(DDPMPP_PARAMETERS / 1e6, 1)


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
