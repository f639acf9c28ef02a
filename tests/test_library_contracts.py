"""What si_lightning relies on in Lightning, torch and fsspec, pinned so an upgrade that changes it fails here.

The code uses public APIs where there is one (``save_hyperparameters``/``hparams``, ``AsyncCheckpointIO``,
fsspec's ``get_protocol``); two private torch functions stay because nothing public does their job, and
their behaviour is pinned below.
"""

from __future__ import annotations

import fsspec
import lightning.pytorch as pl
import torch
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.plugins import AsyncCheckpointIO, TorchCheckpointIO

from si_lightning.checkpoint_io import AtomicCheckpointIO, install_atomic_checkpoint_io
from si_lightning.checkpoints import torch_allowed_globals
from si_lightning.module import InterpolantModule
from si_lightning.nn import MLP


def test_foreach_lerp_moves_each_tensor_in_place_towards_its_target():
    """The EMA's one kernel per step: a <- a + w (b - a) for every pair, in place (torch has no public foreach)."""
    averages = [torch.zeros(3), torch.full((2, 2), 4.0)]
    targets = [torch.ones(3), torch.zeros(2, 2)]
    storages = [average.data_ptr() for average in averages]
    torch._foreach_lerp_(averages, targets, 0.25)
    assert torch.equal(averages[0], torch.full((3,), 0.25)) and torch.equal(averages[1], torch.full((2, 2), 3.0))
    assert [average.data_ptr() for average in averages] == storages


def test_torch_allowed_globals_include_the_safe_loaders_defaults():
    """torch's default allowlist has no public accessor: without it every global in a file would be 'refused'."""
    allowed = torch_allowed_globals()
    assert {"collections.OrderedDict", "torch.Size", "torch.nn.parameter.Parameter"} <= allowed
    assert "builtins.eval" not in allowed and "os.system" not in allowed


def test_local_paths_are_written_atomically_and_urls_through_fsspec(tmp_path):
    """A plain path gets the atomic rename; a URL (here fsspec's in-memory filesystem) goes to Lightning's IO."""
    checkpoint = {"state_dict": {"w": torch.arange(3.0)}}
    io = AtomicCheckpointIO()
    io.save_checkpoint(checkpoint, tmp_path / "local.ckpt")
    assert torch.equal(io.load_checkpoint(tmp_path / "local.ckpt")["state_dict"]["w"], torch.arange(3.0))
    io.save_checkpoint(checkpoint, "memory://checkpoints/remote.ckpt")
    assert fsspec.filesystem("memory").exists("/checkpoints/remote.ckpt")


def test_the_atomic_io_goes_under_lightnings_asynchronous_wrapper(tmp_path):
    """The default IO, plain or inside AsyncCheckpointIO, becomes atomic; any other IO is left alone."""
    plain = pl.Trainer(default_root_dir=tmp_path, logger=False, enable_progress_bar=False)
    assert install_atomic_checkpoint_io(plain) and type(plain.strategy.checkpoint_io) is AtomicCheckpointIO
    wrapped = pl.Trainer(default_root_dir=tmp_path, logger=False, plugins=[AsyncCheckpointIO()])
    assert install_atomic_checkpoint_io(wrapped)
    assert type(wrapped.strategy.checkpoint_io) is AsyncCheckpointIO
    assert type(wrapped.strategy.checkpoint_io.checkpoint_io) is AtomicCheckpointIO

    class OwnIO(TorchCheckpointIO):
        pass

    own = pl.Trainer(default_root_dir=tmp_path, logger=False, plugins=[OwnIO()])
    assert not install_atomic_checkpoint_io(own) and type(own.strategy.checkpoint_io) is OwnIO


def test_under_lightning_cli_the_parsed_config_is_saved_and_rebuilds_the_model(tmp_path):
    """Under LightningCLI the parsed config (the backbone's class path) is saved; plain Python leaves objects out."""
    backbone = {"class_path": "si_lightning.nn.MLP", "init_args": {"data_shape": [2], "hidden_size": 8}}
    cli = LightningCLI(
        InterpolantModule,
        run=False,
        args={"model": {"backbone": backbone, "loss_bins": 0}, "trainer": {"logger": False}},
    )
    assert cli.model.hparams["backbone"]["class_path"] == "si_lightning.nn.MLP"
    path = tmp_path / "cli.ckpt"
    cli.trainer.strategy.connect(cli.model)
    cli.trainer.save_checkpoint(path)
    loaded = InterpolantModule.load_from_checkpoint(path, weights_only=False)
    for name, value in cli.model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], value), name
    plain = InterpolantModule(backbone=MLP(data_shape=(2,), hidden_size=8), loss_bins=0)
    assert "backbone" not in plain.hparams and plain.hparams["loss_bins"] == 0
