"""The module's fast paths: t-binned loss kept on the device, the compile option, fused optimizers."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch
from torchmetrics import MeanMetric

from si_lightning.data import ToyDataModule
from si_lightning.interpolants import Interpolant
from si_lightning.module import InterpolantModule, compile_options, with_fused_kernels
from si_lightning.nn import MLP, DiT, UNet, ZigMa


class RecordingModule(InterpolantModule):
    """Keeps every per-sample loss and t of the run, to recompute the bins the old way."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.recorded: dict[bool, list[tuple[torch.Tensor, torch.Tensor]]] = {True: [], False: []}

    def per_sample_loss(self, batch, *args, **kwargs):
        loss, t = super().per_sample_loss(batch, *args, **kwargs)
        self.recorded[self.training].append((loss.detach().clone(), t.detach().clone()))
        return loss, t


def old_bin_means(steps: list[tuple[torch.Tensor, torch.Tensor]], bins: int, interval) -> list[float]:
    """The previous per-step computation: one MeanMetric per bin updated with the batch's bin mean and count."""
    metrics = [MeanMetric() for _ in range(bins)]
    t_min, t_max = interval
    for loss, t in steps:
        index = ((t - t_min) / (t_max - t_min) * bins).long().clamp(0, bins - 1)
        for bin_index, metric in enumerate(metrics):
            inside = (index == bin_index).to(loss.dtype)
            count = inside.sum()
            metric.update((loss * inside).sum() / count.clamp_min(1), weight=count)
    return [float(metric.compute()) for metric in metrics]


@pytest.mark.timeout(120)
def test_loss_bins_equal_the_per_step_epoch_means():
    model = RecordingModule(
        backbone=MLP(data_shape=(2,), out_channels=2, hidden_size=16), interpolant=Interpolant("linear", "brownian")
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_epochs=1,
        limit_train_batches=6,
        limit_val_batches=3,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=ToyDataModule(batch_size=32))
    for phase, training in (("train", True), ("val", False)):
        steps = model.recorded[training]
        assert len(steps) == (6 if training else 3)
        expected = old_bin_means(steps, 4, model.train_interval)
        names = sorted(key for key in trainer.logged_metrics if key.startswith(f"{phase}/loss_t["))
        assert names == [f"{phase}/loss_t[{low}]" for low in ("0.00,0.25", "0.25,0.50", "0.50,0.75", "0.75,1.00")]
        logged = [float(trainer.logged_metrics[name]) for name in names]
        # float32 sums of a few hundred values: agreement to float32 rounding.
        assert logged == pytest.approx(expected, rel=1e-5)
        # And the bins are the loss in each t-range: their count-weighted mean is the epoch's mean loss.
        losses, times = torch.cat([loss for loss, _ in steps]), torch.cat([t for _, t in steps])
        index = ((times - model.train_interval[0]) / (model.train_interval[1] - model.train_interval[0]) * 4).long()
        counts = torch.bincount(index.clamp(0, 3), minlength=4).double()
        assert float((torch.tensor(logged, dtype=torch.float64) * counts).sum() / counts.sum()) == pytest.approx(
            float(losses.double().mean()), rel=1e-5
        )


def test_no_loss_bins_logs_none():
    model = InterpolantModule(backbone=MLP(data_shape=(2,), out_channels=2, hidden_size=8), loss_bins=0)
    model._log_bins("train", torch.ones(4), torch.full((4,), 0.5))
    assert model._bin_totals == {}


def small_backbones() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    unet = UNet(data_shape=(1, 8, 8), model_channels=16, channel_multipliers=(1, 2), num_res_blocks=1, norm_groups=8)
    dit = DiT(data_shape=(1, 8, 8), preset=None, depth=2, hidden_size=64, num_heads=4, patch_size=4)
    zigma = ZigMa(data_shape=(1, 8, 8), preset=None, depth=3, hidden_size=32, patch_size=2, chunk_size=8)
    for parameter in (*unet.parameters(), *dit.parameters()):  # both start at an exact zero output
        torch.nn.init.normal_(parameter, std=0.05)
    for name, parameter in zigma.named_parameters():  # the same, keeping A = -exp(A_log) and delta Mamba's
        if "A_log" not in name and "dt_proj" not in name:
            torch.nn.init.normal_(parameter, std=0.05)
    return {"unet": unet, "dit": dit, "zigma": zigma}


@pytest.mark.slow  # dynamo and AOTAutograd tracing: tens of seconds per backbone on a CPU
@pytest.mark.timeout(600)
@pytest.mark.parametrize("name", ["unet", "dit", "zigma"])
def test_compiled_backbone_has_no_graph_break_and_equal_outputs(name):
    """fullgraph=True makes a graph break an error; AOTAutograd's trace (aot_eager) runs forward and backward
    through the captured graph without Inductor's build time, and must agree to float32 rounding."""
    eager_backbone = small_backbones()[name]
    compiled_backbone = small_backbones()[name]
    compiled_backbone.load_state_dict(eager_backbone.state_dict())
    eager = InterpolantModule(backbone=eager_backbone, loss_bins=0)
    compiled = InterpolantModule(backbone=compiled_backbone, loss_bins=0, compile={"backend": "aot_eager"})
    assert list(compiled.state_dict()) == list(eager.state_dict())  # checkpoints stay interchangeable
    x, t = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1)), torch.linspace(0.1, 0.9, 8)
    expected, output = eager(x, t), compiled(x, t)
    assert float(expected.detach().abs().mean()) > 1e-3  # outputs that are not all zero
    torch.testing.assert_close(output, expected, rtol=1e-5, atol=1e-6)
    output.square().mean().backward()
    expected.square().mean().backward()
    for (key, parameter), reference in zip(compiled.named_parameters(), eager.parameters(), strict=True):
        torch.testing.assert_close(parameter.grad, reference.grad, rtol=1e-4, atol=1e-6, msg=key)
    explanation = torch._dynamo.explain(eager_backbone)(x, t)
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1


def test_compile_setting_is_checked():
    assert compile_options(False) is None
    assert compile_options(True) == {"fullgraph": True}
    assert compile_options({"mode": "max-autotune"}) == {"fullgraph": True, "mode": "max-autotune"}
    with pytest.raises(ValueError, match="compile must be true, false or a dict of torch.compile arguments, got 'yes'"):
        InterpolantModule(backbone=MLP(data_shape=(2,), out_channels=2, hidden_size=8), compile="yes")


@pytest.mark.parametrize("optimizer_class", [torch.optim.AdamW, torch.optim.Adam, torch.optim.SGD])
def test_fused_optimizer_takes_the_same_steps(optimizer_class):
    torch.manual_seed(0)
    reference = torch.nn.Linear(16, 4)
    fused = torch.nn.Linear(16, 4)
    fused.load_state_dict(reference.state_dict())
    settings = {"lr": 0.01, "weight_decay": 0.1} | ({"momentum": 0.9} if optimizer_class is torch.optim.SGD else {})
    plain = optimizer_class(reference.parameters(), foreach=False, **settings)
    faster = with_fused_kernels(optimizer_class(fused.parameters(), **settings))
    assert faster.param_groups[0]["fused"] and faster.defaults["lr"] == 0.01
    data = torch.randn(32, 16, generator=torch.Generator().manual_seed(2))
    for _ in range(5):
        for model, optimizer in ((reference, plain), (fused, faster)):
            optimizer.zero_grad()
            model(data).square().mean().backward()
            optimizer.step()
    for parameter, expected in zip(fused.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(parameter, expected, rtol=1e-5, atol=1e-6)


def test_an_optimizer_with_a_chosen_implementation_is_kept():
    parameters = [torch.nn.Parameter(torch.zeros(3))]
    for optimizer in (
        torch.optim.AdamW(parameters, foreach=True),
        torch.optim.AdamW(parameters, fused=False),
        torch.optim.RMSprop(parameters),
    ):
        assert with_fused_kernels(optimizer) is optimizer
