"""Every YAML in configs/ parses and instantiates through the real LightningCLI."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from si_lightning.cli import build_cli as main
from si_lightning.errors import ConfigurationError
from si_lightning.metrics.inception import inception_cache_path
from si_lightning.module import InterpolantModule
from tests.integration.config_files import load_config
from tests.integration.executable import EXECUTABLE, environment
from tests.test_metrics_inception import write_random_inception_weights

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
# The smallest complete config; each overlay replaces the part of it that it is about.
BASE = {
    "trainer": CONFIGS / "trainer.yaml",
    "data": CONFIGS / "data" / "digits.yaml",
    "backbone": CONFIGS / "backbone" / "unet-small.yaml",
    "interpolant": CONFIGS / "interpolant" / "linear.yaml",
}
EXTRA_ARGUMENTS = {"unet-cifar": ["--data.init_args.image_size", "32"]}  # attention at 16 px needs 32 px data
HEAVY = {"dit-l2.yaml", "dit-xl2.yaml"}  # hundreds of millions of parameters: slow to build on a CPU


def is_list_file(path: Path) -> bool:
    """Whether ``path`` holds a YAML list: a value an experiment names by path (a callbacks list), not an overlay."""
    return isinstance(yaml.safe_load(path.read_text()), list)


def overlays() -> list[Path]:
    return sorted(
        path for path in CONFIGS.rglob("*.yaml") if path.parent.name != "experiments" and not is_list_file(path)
    )


def contains(resolved, stated) -> bool:
    """Whether the parser's ``resolved`` value holds every setting of the ``stated`` one (it adds defaults)."""
    if isinstance(stated, dict):
        return isinstance(resolved, dict) and all(
            key in resolved and contains(resolved[key], value) for key, value in stated.items()
        )
    if isinstance(stated, list):
        return (
            isinstance(resolved, list)
            and len(resolved) == len(stated)
            and all(contains(item, value) for item, value in zip(resolved, stated, strict=True))
        )
    return resolved == stated


def arguments_for(path: Path) -> list[str]:
    parts = dict(BASE)
    if path.parent.name in parts:
        parts[path.parent.name] = path
    elif path != BASE["trainer"]:
        parts["extra"] = path
    if path.stem in ("toy-2d", "mlp"):  # 2-D points and the MLP go together
        parts["backbone"] = CONFIGS / "backbone" / "mlp.yaml"
        parts["data"] = CONFIGS / "data" / "toy-2d.yaml"
    arguments = [argument for part in parts.values() for argument in ("-c", str(part))]
    return arguments + EXTRA_ARGUMENTS.get(path.stem, [])


def stated_accelerator(path: Path) -> str | None:
    return ((load_config(path) or {}).get("trainer") or {}).get("accelerator")


def config_ids(path: Path) -> str:
    return str(path.relative_to(CONFIGS))


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "path",
    [pytest.param(p, marks=pytest.mark.slow) if p.name in HEAVY else p for p in overlays()],
    ids=config_ids,
)
def test_overlay_parses_and_instantiates(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = main(arguments_for(path) + ["--trainer.logger", "false"], run=False)
    assert isinstance(cli.model, InterpolantModule)
    assert tuple(cli.model.backbone.data_shape) == tuple(cli.datamodule.data_shape)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("path", sorted((CONFIGS / "experiments").glob("*.yaml")), ids=config_ids)
def test_experiment_parses_and_instantiates(path, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # Configs with InceptionV3 FID need its weights file where torch-fidelity keeps it: a random one here.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    weights = inception_cache_path()
    weights.parent.mkdir(parents=True, exist_ok=True)
    write_random_inception_weights(weights)
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "-c", str(path), "--print_config"])
    assert exit_info.value.code == 0
    printed = capsys.readouterr().out
    assert "class_path: si_lightning" in printed
    # The callbacks the run gets are the list the config states, inline or in the file it names by path
    # (read relative to the config, not the working directory), in order and with every setting.
    stated = (load_config(path).get("trainer") or {}).get("callbacks") or []
    resolved = yaml.safe_load(printed)["trainer"]["callbacks"] or []
    assert [entry["class_path"] for entry in resolved] == [entry["class_path"] for entry in stated]
    assert contains(resolved, stated), resolved
    # A GPU-only config (accelerator: gpu) is built on the CPU where there is no GPU: its model and data are
    # what this checks; the executable's refusal of it without a GPU is test_kolmogorov_forecast's.
    on_cpu = (
        ["--trainer.accelerator", "cpu"] if stated_accelerator(path) == "gpu" and not torch.cuda.is_available() else []
    )
    cli = main(["-c", str(path), "--trainer.logger", "false", *on_cpu], run=False)
    assert sum(p.numel() for p in cli.model.parameters()) > 0
    assert torch.isfinite(next(cli.model.parameters())).all()


def test_unknown_key_is_an_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError) as raised:
        main(arguments_for(BASE["trainer"]) + ["--model.predictionn", "velocity"], run=False)
    assert (raised.value.key, raised.value.value) == ("model.predictionn", "velocity")


def test_negative_learning_rate_stops_at_parse(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigurationError, match=r"model\.optimizer\.init_args\.lr = -0\.001: a learning rate must be"):
        main(arguments_for(BASE["trainer"]) + ["--model.optimizer.init_args.lr", "-0.001"], run=False)


def test_backbone_that_cannot_take_the_data_stops_at_instantiation(tmp_path, monkeypatch):
    """DiT with patch 3 on 8 x 8 digits: the linked data shape reaches the backbone and is refused by name."""
    monkeypatch.chdir(tmp_path)
    arguments = arguments_for(CONFIGS / "backbone" / "dit-s2.yaml") + ["--model.backbone.init_args.patch_size", "3"]
    with pytest.raises(ConfigurationError, match=r"patch_size=3 must divide the image size, got height 8") as raised:
        main(arguments, run=False)
    assert (raised.value.key, raised.value.value) == ("model.backbone.init_args.patch_size", 3)


def test_a_config_without_an_interpolant_gets_the_linear_one(tmp_path, monkeypatch):
    """The documented default: linear with gamma = 0 (no TypeError from the hyper-parameter saving)."""
    monkeypatch.chdir(tmp_path)
    parts = [BASE["trainer"], BASE["data"], BASE["backbone"]]
    arguments = [argument for part in parts for argument in ("-c", str(part))]
    cli = main(arguments + ["--trainer.logger", "false"], run=False)
    t = torch.tensor([0.0, 0.25, 1.0])
    coefficients = cli.model.interpolant.coefficients(t)
    assert torch.equal(coefficients.alpha, 1 - t) and torch.equal(coefficients.beta, t)
    assert torch.equal(coefficients.gamma, torch.zeros(3))


@pytest.mark.timeout(120)
def test_a_callbacks_list_file_is_a_callbacks_value(tmp_path, monkeypatch):
    """``--trainer.callbacks FILE`` gives the list in FILE, in order; the samplers that the file writes once
    (a YAML anchor) are built once per callback, so the grids and the FID hold separate sampler objects."""
    monkeypatch.chdir(tmp_path)
    listed = CONFIGS / "callbacks" / "digits-generation.yaml"
    arguments = arguments_for(BASE["trainer"]) + ["--trainer.callbacks", str(listed), "--trainer.logger", "false"]
    cli = main(arguments, run=False)
    stated = [entry["class_path"].rsplit(".", 1)[-1] for entry in load_config(listed)]
    kinds = [type(callback).__name__ for callback in cli.trainer.callbacks if type(callback).__name__ in stated]
    assert stated == ["EMA", "ModelCheckpoint", "SamplingCallback", "FIDCallback", "LikelihoodCallback"]
    # The Trainer moves checkpoint callbacks to the end of its list; the others keep the file's order.
    assert kinds == ["EMA", "SamplingCallback", "FIDCallback", "LikelihoodCallback", "ModelCheckpoint"]
    grids = next(callback for callback in cli.trainer.callbacks if type(callback).__name__ == "SamplingCallback")
    fid = next(callback for callback in cli.trainer.callbacks if type(callback).__name__ == "FIDCallback")
    assert set(grids.samplers) == set(fid.samplers) == {"ode-heun", "sde-euler-sigma"}
    assert all(grids.samplers[name] is not fid.samplers[name] for name in fid.samplers)
    assert fid.samplers["sde-euler-sigma"].steps == 50 and fid.samplers["ode-heun"].steps == 20


@pytest.mark.timeout(240)
def test_the_executable_reads_a_callbacks_path_relative_to_the_config(tmp_path):
    """The documented x4 run from another folder: both files name ../callbacks/digits-restoration.yaml, read
    beside the configs, not in the working directory; --print_config shows the list written out, ends with
    the last top-level key and writes nothing."""
    experiments = CONFIGS / "experiments"
    configs = [experiments / "digits-superres.yaml", experiments / "digits-superres-x4.yaml"]
    command = [str(EXECUTABLE), "fit", *(argument for path in configs for argument in ("-c", str(path)))]
    completed = subprocess.run(
        [*command, "--print_config"],
        cwd=tmp_path,
        env=environment(),
        capture_output=True,
        text=True,
        timeout=200,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert completed.stdout.rstrip().splitlines()[-1] == "weights_only: null"
    printed = yaml.safe_load(completed.stdout)
    stated = load_config(configs[1])["trainer"]["callbacks"]
    assert [entry["class_path"] for entry in printed["trainer"]["callbacks"]] == [
        entry["class_path"] for entry in stated
    ]
    assert contains(printed["trainer"]["callbacks"], stated)
    assert printed["data"]["init_args"]["image_size"] == 16
    assert printed["data"]["init_args"]["coupling"]["init_args"]["factor"] == 4
    assert list(tmp_path.iterdir()) == []
