"""Evaluation callbacks with the real Trainer: pictures, FID against a direct computation, likelihood, schedule."""

from __future__ import annotations

import json
import math
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger, WandbLogger
from PIL import Image

from si_lightning.callbacks import EMA, FIDCallback, LikelihoodCallback, PeriodicEvaluation, SamplingCallback
from si_lightning.callbacks.artifacts import GRID_PADDING, METRICS_FILE, image_grid, log_image
from si_lightning.callbacks.generation import evaluation_mode, gather_in_order
from si_lightning.callbacks.likelihood import (
    BitsPerDim,
    Nats,
    check_distributed_solver,
    dequantize,
    standard_normal_log_prob,
    units_for,
)
from si_lightning.cli import build_cli as main
from si_lightning.condition import Condition
from si_lightning.couplings import ClassLabels, SuperResolution
from si_lightning.data import DigitsDataModule, ToyDataModule
from si_lightning.interpolants import Interpolant
from si_lightning.metrics import (
    FeatureStatistics,
    StatisticsCache,
    build_feature_extractor,
    extract_features,
    frechet_distance,
    kernel_distance,
)
from si_lightning.module import InterpolantModule
from si_lightning.nn import MLP, UNet
from si_lightning.sampling import ODESampler, SDESampler, base_noise, bits_per_dim, log_likelihood

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def digits_model() -> InterpolantModule:
    torch.manual_seed(0)
    backbone = UNet(
        data_shape=(1, 8, 8), model_channels=16, channel_multipliers=(1, 2), num_res_blocks=1, norm_groups=8
    )
    return InterpolantModule(backbone=backbone, interpolant=Interpolant("linear"), loss_bins=0)


def toy_model() -> InterpolantModule:
    torch.manual_seed(0)
    return InterpolantModule(backbone=MLP(data_shape=(2,), hidden_size=32), interpolant=Interpolant("linear"))


def fit(model, data, callbacks, root: Path, max_steps: int = 2, loggers=None, **kwargs) -> pl.Trainer:
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        limit_val_batches=0,
        logger=loggers if loggers is not None else CSVLogger(root, name="run"),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
        **kwargs,
    )
    trainer.fit(model, datamodule=data)
    return trainer


def records(trainer: pl.Trainer) -> list[dict]:
    return [json.loads(line) for line in (Path(trainer.log_dir) / METRICS_FILE).read_text().splitlines()]


class CountingDigits(DigitsDataModule):
    """Digits that count how often the reference data is read (evidence of the statistics cache)."""

    calls = 0

    def real_samples(self, count, generator=None, split="train"):
        CountingDigits.calls += 1
        return super().real_samples(count, generator, split)


# ----------------------------------------------------------------------------------------- pictures
@pytest.mark.timeout(120)
def test_grid_png_holds_the_seeded_samples_at_any_batch_size(tmp_path):
    samplers = {"ode-heun": ODESampler("heun", steps=3), "sde-euler": SDESampler(steps=3)}
    callback = SamplingCallback(num_samples=6, every_n_steps=None, samplers=samplers, batch_size=6, columns=3)
    loggers = [CSVLogger(tmp_path, name="run"), TensorBoardLogger(tmp_path, name="board")]
    model, data = digits_model(), DigitsDataModule(batch_size=16)
    trainer = fit(model, data, [EMA(decay=0.5), callback], tmp_path, loggers=loggers)

    directory = Path(trainer.log_dir) / "samples"
    assert sorted(path.relative_to(directory).as_posix() for path in directory.rglob("*.png")) == [
        "ode-heun/step-00000002.png",
        "sde-euler/step-00000002.png",
    ]
    pad = GRID_PADDING
    for name, sampler in samplers.items():
        written = np.asarray(Image.open(directory / name / "step-00000002.png"))
        assert written.shape == (2 * 8 + 3 * pad, 3 * 8 + 4 * pad)  # 2 rows x 3 columns of 8 x 8 digits
        # Batches of 4 and 2 give the same picture as one batch of 6.
        rebatched = SamplingCallback(num_samples=6, samplers={name: sampler}, batch_size=4, columns=3)
        rebatched.setup(trainer, model, "fit")
        assert np.array_equal(rebatched.picture(rebatched.generate(trainer, model, sampler)), written[..., None])
        # Other seeds, another picture.
        shifted = SamplingCallback(num_samples=6, samplers={name: sampler}, columns=3, first_seed=100)
        shifted.setup(trainer, model, "fit")
        assert not np.array_equal(shifted.picture(shifted.generate(trainer, model, sampler)), written[..., None])
    # Cell (row 1, column 2) is sample 5: the ODE from seed 5's base noise, quantised.
    with torch.no_grad():
        sample = ODESampler("heun", steps=3).sample(model.fields(), base_noise([5], (1, 8, 8))).x
    cell = np.asarray(Image.open(directory / "ode-heun" / "step-00000002.png"))[
        pad + 8 + pad : pad + 16 + pad, pad + 2 * (8 + pad) : pad + 2 * (8 + pad) + 8
    ]
    expected = ((sample.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)[0, 0].numpy()
    assert np.array_equal(cell, expected)
    # The TensorBoard logger received both pictures at the global step.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(loggers[1].log_dir), size_guidance={"images": 0})
    events.Reload()
    assert sorted(events.Tags()["images"]) == ["samples/ode-heun", "samples/sde-euler"]
    image = events.Images("samples/ode-heun")[0]
    assert (image.step, image.height, image.width) == (2, written.shape[0], written.shape[1])


@pytest.mark.timeout(120)
def test_scatter_plot_and_nats_for_two_dimensional_data(tmp_path):
    sampler = ODESampler("euler", steps=4)
    sampling = SamplingCallback(num_samples=50, every_n_steps=None, samplers={"ode-euler": sampler}, batch_size=50)
    likelihood = LikelihoodCallback(
        num_samples=10, every_n_steps=None, divergence="exact", method="rk4", steps=4, batch_size=4
    )
    model, data = toy_model(), ToyDataModule(num_samples=512, val_samples=64, batch_size=64)
    trainer = fit(model, data, [sampling, likelihood], tmp_path)

    written = np.asarray(Image.open(Path(trainer.log_dir) / "samples" / "ode-euler" / "step-00000002.png"))
    assert written.shape == (400, 400, 3)
    red = (written[..., 0] > 150) & (written[..., 1] < 100) & (written[..., 2] < 100)
    assert red.sum() > 50  # the samples' markers over the grey density
    rebatched = SamplingCallback(num_samples=50, samplers={"ode-euler": sampler}, batch_size=7)
    rebatched.setup(trainer, model, "fit")
    assert np.array_equal(rebatched.picture(rebatched.generate(trainer, model, sampler)), written)
    shifted = SamplingCallback(num_samples=50, samplers={"ode-euler": sampler}, first_seed=50)
    shifted.setup(trainer, model, "fit")
    assert not np.array_equal(shifted.picture(shifted.generate(trainer, model, sampler)), written)

    # Continuous 2-D data: -log p in nats, exact divergence, equal to a direct computation.
    generator = torch.Generator().manual_seed(0)
    points = data.real_samples(10, generator, split="val")
    with torch.no_grad():
        direct = log_likelihood(model.fields(), points, standard_normal_log_prob, method="rk4", steps=4)
    value = trainer.callback_metrics["nll-nats-val/ode-rk4-4/n10"]
    assert float(value) == pytest.approx(float(-direct.log_prob.double().mean()), rel=1e-6)


@pytest.mark.timeout(60)
def test_class_conditional_samples_use_label_seed_mod_classes_and_guidance(tmp_path):
    torch.manual_seed(0)
    backbone = UNet(
        data_shape=(1, 8, 8),
        num_classes=10,
        model_channels=16,
        channel_multipliers=(1, 2),
        num_res_blocks=1,
        norm_groups=8,
    )
    model = InterpolantModule(backbone=backbone, interpolant=Interpolant("linear"), loss_bins=0)
    data = DigitsDataModule(batch_size=16, coupling=ClassLabels(drop_probability=0.2))
    sampler = ODESampler("euler", steps=2)
    callback = SamplingCallback(num_samples=12, every_n_steps=None, samplers={"ode": sampler}, guidance_scale=2.0)
    trainer = fit(model, data, [callback], tmp_path, max_steps=1)
    with torch.no_grad():  # one step leaves the output nearly label-free (zero-initialised output layer)
        generator = torch.Generator().manual_seed(1)
        for parameter in model.parameters():
            parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))

    seeds = list(range(12))
    labels = Condition(labels=torch.tensor([seed % 10 for seed in seeds]))
    with torch.no_grad():
        guided = sampler.sample(model.fields(guidance_scale=2.0), base_noise(seeds, (1, 8, 8)), labels).x
        plain = sampler.sample(model.fields(), base_noise(seeds, (1, 8, 8)), labels).x
    generated = callback.generate(trainer, model, sampler)
    torch.testing.assert_close(generated, guided, rtol=1e-5, atol=1e-6)
    assert (generated - plain).abs().max() > 1e-4  # the guidance scale took effect


# ----------------------------------------------------------------------------------------------- FID
@pytest.mark.timeout(180)
def test_fid_and_kid_equal_a_direct_computation_and_the_cache_is_reused(tmp_path):
    sampler = ODESampler("heun", steps=3)
    count = 100

    def callback() -> FIDCallback:
        return FIDCallback(
            num_samples=count,
            every_n_steps=1,
            samplers={"ode-heun": sampler},
            batch_size=30,
            extractor="digits",
            cache_dir=str(tmp_path / "cache"),
            kid=True,
            kid_subsets=10,
            kid_subset_size=50,
        )

    CountingDigits.calls = 0
    model, data = digits_model(), CountingDigits(batch_size=16)
    trainer = fit(model, data, [EMA(decay=0.5), callback()], tmp_path)
    assert CountingDigits.calls == 1  # two evaluations (steps 1, 2), one read of the real data
    assert [record["step"] for record in records(trainer)] == [1, 2]
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1

    extractor = build_feature_extractor("digits")
    real = data.real_samples(count, torch.Generator().manual_seed(0), split="train")
    with torch.no_grad():
        fake = sampler.sample(model.fields(), base_noise(range(count), (1, 8, 8))).x
    real_features, fake_features = extract_features(extractor, real), extract_features(extractor, fake)
    logged = records(trainer)[-1]["metrics"]
    assert set(logged) == {
        "fid-digits/ode-heun/n100",
        "kid-digits/ode-heun/n100",
        "kid-std-digits/ode-heun/n100",
        "nfe/ode-heun/n100",
    }
    assert logged["fid-digits/ode-heun/n100"] == pytest.approx(frechet_distance(real_features, fake_features), rel=1e-6)
    kid_mean, kid_std = kernel_distance(real_features, fake_features, subsets=10, subset_size=50)
    assert logged["kid-digits/ode-heun/n100"] == pytest.approx(float(kid_mean), rel=1e-6)
    assert logged["kid-std-digits/ode-heun/n100"] == pytest.approx(float(kid_std), rel=1e-6)
    assert logged["nfe/ode-heun/n100"] == 5  # heun: 2 evaluations per step, the last step Euler
    # The loggers saw it too (CSV columns) and a monitor can read it.
    header = (Path(trainer.log_dir) / "metrics.csv").read_text().splitlines()[0].split(",")
    assert "fid-digits/ode-heun/n100" in header
    assert float(trainer.callback_metrics["fid-digits/ode-heun/n100"]) == pytest.approx(
        logged["fid-digits/ode-heun/n100"], rel=1e-6
    )

    # A second run with the same data, extractor and N reads the statistics from the cache.
    CountingDigits.calls = 0
    fit(digits_model(), CountingDigits(batch_size=16), [callback()], tmp_path / "second", max_steps=1)
    assert CountingDigits.calls == 0


@pytest.mark.timeout(120)
def test_fid_cache_problems_surface_through_the_callback(tmp_path):
    def callback() -> FIDCallback:
        return FIDCallback(
            num_samples=20,
            every_n_steps=None,
            samplers={"ode-euler": ODESampler("euler", steps=2)},
            extractor="digits",
            cache_dir=str(tmp_path / "cache"),
        )

    data = DigitsDataModule(batch_size=16)
    first = callback()
    key = first.statistics_key(data)
    # Statistics of another feature size under this key: an error naming both sizes.
    cache = StatisticsCache(tmp_path / "cache")
    path = cache.save(
        key, FeatureStatistics(torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64), 20)
    )
    with pytest.raises(ValueError, match="3-d features but the extractor"):
        fit(digits_model(), data, [first], tmp_path / "mismatch", max_steps=1)
    # A corrupted file: detected by its checksum, recomputed with a warning, and the run completes.
    path.write_bytes(b"not a statistics file")
    with pytest.warns(UserWarning, match="recomputing"):
        trainer = fit(digits_model(), data, [callback()], tmp_path / "corrupted", max_steps=1)
    assert math.isfinite(records(trainer)[0]["metrics"]["fid-digits/ode-euler/n20"])
    assert cache.load(key, 64) is not None  # rewritten, valid


# ------------------------------------------------------------------------------------------ likelihood
@pytest.mark.timeout(120)
def test_bits_per_dim_equal_a_direct_computation(tmp_path):
    callback = LikelihoodCallback(num_samples=20, every_n_steps=None, method="rk4", steps=4, batch_size=7)
    model, data = digits_model(), DigitsDataModule(batch_size=16)
    trainer = fit(model, data, [EMA(decay=0.5), callback], tmp_path)

    generator = torch.Generator().manual_seed(0)
    points = dequantize(data.real_samples(20, generator, split="val"), generator)
    with torch.no_grad():
        direct = log_likelihood(
            model.fields(),
            points,
            standard_normal_log_prob,
            divergence="hutchinson",
            method="rk4",
            steps=4,
            seeds=range(20),
        )
    expected = bits_per_dim(direct.log_prob.double(), 64)
    (record,) = records(trainer)
    metrics = record["metrics"]
    assert metrics["bits-per-dim-val/ode-rk4-4/n20"] == pytest.approx(float(expected.mean()), rel=1e-6)
    assert metrics["bits-per-dim-val-stderr/ode-rk4-4/n20"] == pytest.approx(
        float(expected.std() / math.sqrt(20)), rel=1e-4
    )
    assert metrics["nfe-likelihood/ode-rk4-4/n20"] == 16  # rk4: 4 evaluations per step
    assert record["details"]["dequantization"] == "uniform 8-bit" and record["details"]["probes"] == 1


def test_dequantization_stays_in_the_pixels_cell():
    pixels = torch.arange(256, dtype=torch.float64).reshape(1, 1, 16, 16)
    x = pixels / 127.5 - 1.0  # how uint8 images enter the model
    moved = dequantize(x, torch.Generator().manual_seed(0))
    cell = (moved + 1.0) * 128.0  # = k + u
    assert torch.equal(cell.floor(), pixels)
    assert 0.3 < float((cell - pixels).mean()) < 0.7  # u ~ U[0, 1)


def test_units_standard_normal_and_distributed_solver_checks():
    assert isinstance(units_for(None, (1, 8, 8)), BitsPerDim) and isinstance(units_for(None, (2,)), Nats)
    with pytest.raises(ValueError, match="bits-per-dim, nats"):
        units_for("bits", (2,))
    x = torch.randn(5, 3, 2, generator=torch.Generator().manual_seed(0))
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(x).flatten(1).sum(1)
    torch.testing.assert_close(standard_normal_log_prob(x), expected)
    check_distributed_solver(ODESampler("dopri5"), world_size=1)
    check_distributed_solver(ODESampler("rk4", steps=5), world_size=2)
    with pytest.raises(ValueError, match="fixed-step method.*'dopri5'"):
        check_distributed_solver(ODESampler("dopri5"), world_size=2)


# -------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: FIDCallback(num_samples=1, extractor="digits"), "num_samples must be an integer >= 2; got 1"),
        (lambda: FIDCallback(num_samples=10, extractor="digits", kid=True, kid_subset_size=20), "exceeds"),
        (lambda: FIDCallback(extractor="alexnet"), "alexnet"),
        (lambda: SamplingCallback(num_samples=0), "num_samples must be an integer >= 1; got 0"),
        (lambda: SamplingCallback(every_n_steps=0), "every_n_steps must be a positive integer"),
        (lambda: SamplingCallback(samplers={"a/b": ODESampler()}), "'a/b'"),
        (lambda: SamplingCallback(samplers={"ode": "heun"}), "must be an ODESampler or SDESampler"),
        (lambda: SamplingCallback(samplers={}), "at least one sampler"),
        (lambda: LikelihoodCallback(method="rk5"), "rk5"),
        (lambda: LikelihoodCallback(divergence="trace"), "trace"),
        (lambda: LikelihoodCallback(units="bits"), "bits"),
    ],
)
def test_bad_arguments_fail_at_construction(build, message):
    with pytest.raises(ValueError, match=message):
        build()


def test_missing_inception_weights_name_both_places(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    missing = tmp_path / "nowhere" / "inception.pth"
    with pytest.raises(FileNotFoundError) as error:
        FIDCallback(extractor="inception", weights_path=str(missing))
    assert str(missing) in str(error.value) and str(tmp_path / "torch" / "hub" / "checkpoints") in str(error.value)


@pytest.mark.timeout(60)
def test_bad_setups_fail_before_training(tmp_path):
    digits = DigitsDataModule(batch_size=16)
    with pytest.raises(ValueError, match="list the EMA callback first"):
        fit(digits_model(), digits, [SamplingCallback(), EMA()], tmp_path)
    # Sampling, FID and likelihood take a data-dependent base from held-out data (test_conditional.py);
    # a likelihood needs the base's density, which a noiseless super-resolution base does not have.
    coupled = DigitsDataModule(batch_size=16, coupling=SuperResolution(factor=2, sigma=0.0))
    conditional = UNet(
        data_shape=(1, 8, 8), cond_channels=1, model_channels=16, channel_multipliers=(1, 2), norm_groups=8
    )
    model = InterpolantModule(backbone=conditional, interpolant=Interpolant("linear", gaussian_base=False))
    with pytest.raises(ValueError, match="super-resolution sigma = 0.0: a likelihood needs base noise"):
        fit(model, coupled, [LikelihoodCallback(num_samples=4)], tmp_path)
    with pytest.raises(ValueError, match="guidance_scale = 2.0 needs class-conditional data"):
        fit(digits_model(), digits, [SamplingCallback(guidance_scale=2.0)], tmp_path)
    toy = ToyDataModule(num_samples=256, batch_size=64)
    with pytest.raises(ValueError, match="needs image data"):
        fit(toy_model(), toy, [FIDCallback(num_samples=10, extractor="digits", cache_dir=str(tmp_path))], tmp_path)


# -------------------------------------------------------------------------------------- machinery
class RecordingEvaluation(PeriodicEvaluation):
    def __init__(self, every_n_steps):
        super().__init__(every_n_steps)
        self.steps: list[tuple[str, int]] = []

    def evaluate(self, trainer, pl_module):
        assert not torch.is_inference_mode_enabled()
        self.steps.append((trainer.state.fn.value, trainer.global_step))


@pytest.mark.timeout(60)
def test_schedule_every_n_steps_once_per_step_and_at_the_end(tmp_path):
    recorder = RecordingEvaluation(every_n_steps=2)
    data = ToyDataModule(num_samples=1024, val_samples=64, batch_size=64)
    model = toy_model()
    trainer = fit(model, data, [recorder], tmp_path, max_steps=5, accumulate_grad_batches=2)
    assert recorder.steps == [("fit", 2), ("fit", 4), ("fit", 5)]  # 10 batches, each step once, plus the end
    recorder.steps.clear()
    trainer = fit(toy_model(), data, [recorder], tmp_path, max_steps=4)
    assert recorder.steps == [("fit", 2), ("fit", 4)]  # the end falls on a multiple of N
    recorder.steps.clear()
    pl.Trainer(
        accelerator="cpu", logger=False, callbacks=[recorder], enable_progress_bar=False, limit_val_batches=1
    ).validate(model, datamodule=data)
    assert recorder.steps == [("validate", 0)]
    del trainer


def test_evaluation_mode_restores_every_module_and_autograd():
    model = digits_model()
    model.train()
    model.backbone.time_embedding.eval()  # a submodule kept in eval mode by the user stays so
    with evaluation_mode(model, ema=True):
        assert not any(module.training for module in model.modules())
        assert not torch.is_grad_enabled()
    assert torch.is_grad_enabled() and model.training and model.backbone.training
    assert not model.backbone.time_embedding.training


def test_image_grid_layout_and_logger_dispatch(tmp_path):
    images = torch.linspace(-1, 1, 5).reshape(5, 1, 1, 1).expand(5, 3, 2, 3)
    grid = image_grid(images, columns=2)
    pad = GRID_PADDING
    assert grid.shape == (3 * 2 + 4 * pad, 2 * 3 + 3 * pad, 3)
    assert (grid[pad, pad + 3 + pad] == round((images[1, 0, 0, 0].item() + 1) * 127.5)).all()  # image 1: row 0, col 1
    assert (grid[-pad - 1, -pad - 1] == 255).all()  # the empty sixth cell stays white

    class RecordingWandb(WandbLogger):
        def __init__(self):
            super().__init__(offline=True, save_dir=str(tmp_path))
            self.calls = []

        def log_image(self, key, images, step=None, **kwargs):
            self.calls.append((key, images[0].shape, step))

    wandb, csv = RecordingWandb(), CSVLogger(tmp_path)
    log_image([csv, wandb], "samples/ode", grid, step=7)
    assert wandb.calls == [("samples/ode", grid.shape, 7)]


class FakeStrategy:
    """all_gather of rank 0 of 2 whose peer holds ``peer`` (what torch.distributed would return)."""

    def __init__(self, peer):
        self.peer = peer

    def all_gather(self, tensor):
        return torch.stack([tensor, self.peer])


def test_gather_in_order_undoes_the_strided_sharding():
    # 5 samples on 2 ranks: rank 0 holds 0, 2, 4; rank 1 holds 1, 3 (padded to 3 rows).
    trainer = type("Trainer", (), {"world_size": 2, "strategy": FakeStrategy(torch.tensor([1.0, 3.0, 0.0]))})()
    gathered = gather_in_order(trainer, torch.tensor([0.0, 2.0, 4.0]), 5)
    assert gathered.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]


@pytest.mark.timeout(120)
def test_evaluation_overlay_parses_with_the_digits_experiment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    arguments = [
        "-c",
        str(CONFIGS / "experiments" / "digits.yaml"),
        "-c",
        str(CONFIGS / "callbacks" / "evaluation.yaml"),
    ]
    cli = main([*arguments, "--trainer.logger", "false"], run=False)
    kinds = [type(callback).__name__ for callback in cli.trainer.callbacks]
    for name in ("EMA", "ModelCheckpoint", "SamplingCallback", "FIDCallback", "LikelihoodCallback"):
        assert kinds.count(name) == 1, kinds
    assert kinds.index("EMA") < kinds.index("SamplingCallback")
    fid = next(callback for callback in cli.trainer.callbacks if isinstance(callback, FIDCallback))
    assert fid.extractor.name == "digits" and 500 <= fid.num_samples <= 1000
    assert set(fid.samplers) == {"ode-heun", "sde-euler-sbdm"}
    assert isinstance(fid.samplers["ode-heun"], ODESampler) and fid.samplers["ode-heun"].steps == 20
    assert isinstance(fid.samplers["sde-euler-sbdm"], SDESampler)
    assert fid.samplers["sde-euler-sbdm"].diffusion.name == "sbdm"
