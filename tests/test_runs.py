"""``--ckpt_path last``: which checkpoint and which run directory, from the parsed config alone."""

from __future__ import annotations

import os
import time
from pathlib import Path

from jsonargparse import Namespace

from si_lightning.runs import adopt_run_directory, resolve_last_checkpoint

CSV = "si_lightning.loggers.CSVLogger"
WANDB = "lightning.pytorch.loggers.WandbLogger"


def checkpoint(path: Path, age: float = 0.0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"checkpoint")
    stamp = time.time() - age
    os.utime(path, (stamp, stamp))
    return path


def config(logger=None, callbacks=(), default_root_dir=".", ckpt_path="last") -> Namespace:
    trainer = Namespace(logger=logger, callbacks=list(callbacks), default_root_dir=str(default_root_dir))
    return Namespace(trainer=trainer, ckpt_path=ckpt_path)


def logger(class_path: str, **init_args) -> Namespace:
    return Namespace(class_path=class_path, init_args=Namespace(**init_args))


def test_newest_version_of_the_run_is_continued_and_the_logger_takes_its_version(tmp_path, capsys):
    checkpoint(tmp_path / "runs" / "digits" / "version_0" / "checkpoints" / "last.ckpt", age=100)
    newest = checkpoint(tmp_path / "runs" / "digits" / "version_3" / "checkpoints" / "last.ckpt", age=10)
    checkpoint(tmp_path / "runs" / "other" / "version_9" / "checkpoints" / "last.ckpt")  # another run's name
    parsed = config(logger(CSV, save_dir=str(tmp_path / "runs"), name="digits", version=None))
    assert resolve_last_checkpoint(parsed) == newest
    assert parsed.ckpt_path == str(newest)
    assert parsed.trainer.logger.init_args.version == 3  # so no new version_4 is made
    assert capsys.readouterr().err.strip() == f"ckpt_path = last: continuing from {newest}"


def test_a_named_version_looks_only_in_its_own_folder(tmp_path):
    checkpoint(tmp_path / "digits" / "version_0" / "checkpoints" / "last.ckpt")
    mine = checkpoint(tmp_path / "digits" / "job-17" / "checkpoints" / "last.ckpt", age=50)
    parsed = config(logger(CSV, save_dir=str(tmp_path), name="digits", version="job-17"))
    assert resolve_last_checkpoint(parsed) == mine


def test_wandb_runs_live_under_the_project(tmp_path):
    found = checkpoint(tmp_path / "lightning_logs" / "abc123" / "checkpoints" / "last.ckpt")
    parsed = config(logger(WANDB, save_dir=str(tmp_path), project=None, id=None, version=None))
    assert resolve_last_checkpoint(parsed) == found
    assert parsed.trainer.logger.init_args.version == "abc123"


def test_model_checkpoint_dirpath_and_no_logger(tmp_path):
    fixed = checkpoint(tmp_path / "fixed" / "last.ckpt")
    callback = Namespace(
        class_path="lightning.pytorch.callbacks.ModelCheckpoint", init_args=Namespace(dirpath=str(fixed.parent))
    )
    assert resolve_last_checkpoint(config(False, [callback])) == fixed
    plain = checkpoint(tmp_path / "root" / "checkpoints" / "last.ckpt")
    assert resolve_last_checkpoint(config(False, default_root_dir=tmp_path / "root")) == plain


def test_nothing_to_continue_starts_fresh_in_one_line(tmp_path, capsys):
    parsed = config(logger(CSV, save_dir=str(tmp_path), name="digits", version=None))
    assert resolve_last_checkpoint(parsed) is None
    assert parsed.ckpt_path is None and parsed.trainer.logger.init_args.version is None
    message = capsys.readouterr().err.strip().splitlines()
    assert message == [f"ckpt_path = last: no checkpoint of this run in {tmp_path / 'digits'}; starting a new run"]


def test_other_values_are_left_alone(tmp_path):
    for value in (None, "best", str(tmp_path / "given.ckpt")):
        parsed = config(logger(CSV, save_dir=str(tmp_path), name="digits"), ckpt_path=value)
        assert resolve_last_checkpoint(parsed) is None and parsed.ckpt_path == value


def test_an_explicit_checkpoint_of_a_run_continues_in_that_run(tmp_path):
    path = checkpoint(tmp_path / "digits" / "version_2" / "checkpoints" / "epoch=1-step=30.ckpt")
    parsed = config(logger(CSV, save_dir=str(tmp_path), name="digits", version=None), ckpt_path=str(path))
    adopt_run_directory(parsed)
    assert parsed.trainer.logger.init_args.version == 2 and parsed.ckpt_path == str(path)
    elsewhere = checkpoint(tmp_path / "downloads" / "model.ckpt")  # not a checkpoint of this run: a new version
    parsed = config(logger(CSV, save_dir=str(tmp_path), name="digits", version=None), ckpt_path=str(elsewhere))
    adopt_run_directory(parsed)
    assert parsed.trainer.logger.init_args.version is None
