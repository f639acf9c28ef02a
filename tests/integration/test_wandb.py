"""W&B tracking through the real CLI, offline: metrics, an image, the config and the git commit are in
the run's transaction log, and a resume from the checkpoint continues the same run id.

No network and no API key: the CLI itself switches the logger offline (no ``WANDB_API_KEY``), and
the test reads the run back from ``<save_dir>/wandb/offline-run-*/run-<id>.wandb`` with the record
reader below and wandb's own protobuf ``Record``.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from jsonargparse import Namespace
from lightning.pytorch.loggers import WandbLogger

from si_lightning.callbacks.tracking import (
    WANDB_RUN_ID_KEY,
    RunTracking,
    choose_wandb_mode,
    git_state,
    resume_wandb_run,
)
from si_lightning.cli import build_cli as main

wandb = pytest.importorskip("wandb")
from wandb.proto import wandb_internal_pb2  # noqa: E402  (after the importorskip)

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FID_KEY = "fid-digits/ode-euler/n16"
BITS_KEY = "bits-per-dim-val/ode-rk4-2/n8"
IMAGE_KEY = "samples/ode-euler"
EVALUATION_CALLBACKS = Path(__file__).resolve().parent / "wandb_callbacks.yaml"
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def evaluation_records(run_folder: Path) -> dict[str, dict[int, float]]:
    """What the evaluation callbacks wrote to the run's metrics file: {key: {step: value}}."""
    values: dict[str, dict[int, float]] = {}
    for line in (run_folder / "evaluation" / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for key, value in record["metrics"].items():
            values.setdefault(key, {})[record["step"]] = value
    return values


def run_folder_of(cli) -> Path:
    logger = cli.trainer.logger
    return Path(logger.save_dir) / str(logger.name) / str(logger.version)


# ----------------------------------------------------------------------- reading an offline run back
BLOCK_SIZE = 32768  # the transaction log is a LevelDB-format log: 32 KiB blocks of framed chunks
CHUNK_HEADER = 7  # crc32c (4), length (2), type (1)
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def transaction_records(path: Path) -> list[Any]:
    """Every ``wandb_internal_pb2.Record`` in a ``run-<id>.wandb`` file, in order."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} does not start with the W&B transaction-log header"
    records, pending, position = [], b"", 7  # after ":W&B", a 2-byte magic and a version byte
    while position + CHUNK_HEADER <= len(data):
        left_in_block = BLOCK_SIZE - position % BLOCK_SIZE
        if left_in_block < CHUNK_HEADER:  # a block's tail too short for a header is zero padding
            position += left_in_block
            continue
        _, length, kind = struct.unpack("<IHB", data[position : position + CHUNK_HEADER])
        if kind == 0 and length == 0:  # zero-filled rest of the last block
            break
        chunk = data[position + CHUNK_HEADER : position + CHUNK_HEADER + length]
        position += CHUNK_HEADER + length
        if kind in (FULL, FIRST):
            pending = chunk
        elif kind in (MIDDLE, LAST):
            pending += chunk
        else:
            raise AssertionError(f"unknown chunk type {kind} at byte {position} of {path}")
        if kind in (FULL, LAST):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            records.append(record)
    return records


def _merge(target: dict[str, Any], item: Any) -> None:
    """Put one logged item into ``target``; a dict is logged as one item per leaf, under its nested key."""
    path = [item.key] if item.key else list(item.nested_key)
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = json.loads(item.value_json)


@dataclass
class OfflineRun:
    directory: Path
    run_id: str = ""
    finished: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    def values(self, key: str) -> list[Any]:
        return [row[key] for row in self.history if key in row]


def read_offline_run(directory: Path) -> OfflineRun:
    """The run id, the merged config and the history rows of one ``offline-run-*`` directory."""
    (log,) = directory.glob("run-*.wandb")
    run = OfflineRun(directory)
    for record in transaction_records(log):
        kind = record.WhichOneof("record_type")
        if kind == "run":
            run.run_id = record.run.run_id
        elif kind == "exit":
            run.finished = True
        elif kind == "config":
            for item in record.config.update:
                _merge(run.config, item)
        elif kind == "history":
            row: dict[str, Any] = {}
            for item in record.history.item:
                _merge(row, item)
            run.history.append(row)
    assert run.finished, f"{log} has no exit record: the run was not finished and written out"
    return run


def offline_runs(save_dir: Path) -> list[Path]:
    return sorted((save_dir / "wandb").glob("offline-run-*"))  # timestamped names: oldest first


# ---------------------------------------------------------------------------------------- the runs
def fit_arguments(save_dir: Path, max_steps: int) -> list[str]:
    return [
        "fit",
        "-c",
        str(CONFIGS / "experiments" / "digits.yaml"),
        "-c",
        str(CONFIGS / "logger" / "wandb.yaml"),
        "--trainer.logger.init_args.save_dir",
        str(save_dir),
        "--trainer.default_root_dir",
        str(save_dir),
        "--trainer.accelerator",
        "cpu",
        "--trainer.max_steps",
        str(max_steps),
        "--trainer.val_check_interval",
        "2",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.log_every_n_steps",
        "1",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "-c",
        str(EVALUATION_CALLBACKS),
        "--model.backbone.init_args.model_channels",
        "8",
        "--data.init_args.batch_size",
        "16",
    ]


def fit(arguments: list[str]):
    cli = main(arguments)
    # What the end of a process does: finish the run and stop wandb's service, which writes out the
    # transaction log (after ``finish`` alone, the log may still be empty for a moment).
    wandb.finish()
    wandb.teardown()
    return cli, evaluation_records(run_folder_of(cli))


def git(directory: Path, *arguments: str) -> str:
    command = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", *arguments]
    return subprocess.run(command, cwd=directory, capture_output=True, text=True, check=True).stdout.strip()


def without_credentials(patch: pytest.MonkeyPatch, root: Path) -> None:
    """No API key, no mode, wandb's own files under ``root``, and ``root`` as the working directory."""
    for name in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_PROJECT", "WANDB_RUN_ID", "WANDB_RESUME"):
        patch.delenv(name, raising=False)
    patch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_DIR", "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        patch.setenv(name, str(root / "wandb-home"))
    patch.setenv("GIT_CEILING_DIRECTORIES", str(root.parent))
    patch.setenv("XDG_CACHE_HOME", str(root / "cache"))  # the FID callback's real-statistics cache
    patch.chdir(root)


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    """Four steps in a git work tree with an uncommitted change, W&B without credentials."""
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    root = tmp_path_factory.mktemp("tracked")
    with pytest.MonkeyPatch.context() as patch:
        without_credentials(patch, root)
        (root / "notes.txt").write_text("first\n")
        git(root, "init", "-q")
        git(root, "add", "notes.txt")
        git(root, "commit", "-q", "-m", "initial")
        (root / "notes.txt").write_text("changed\n")  # tracked and modified: the tree is dirty
        save_dir = root / "runs"
        cli, evaluation = fit(fit_arguments(save_dir, max_steps=4))
        yield {
            "root": root,
            "save_dir": save_dir,
            "cli": cli,
            "evaluation": evaluation,
            "commit": git(root, "rev-parse", "HEAD"),
        }


@pytest.mark.timeout(300)
def test_offline_run_holds_metrics_image_config_and_commit(first_run):
    (directory,) = offline_runs(first_run["save_dir"])  # offline although the config says offline: false
    run = read_offline_run(directory)
    logger = first_run["cli"].trainer.logger
    assert isinstance(logger, WandbLogger) and run.run_id == logger.version and directory.name.endswith(run.run_id)

    # The metrics of the real evaluation callbacks, exactly as they wrote them, at steps 2 and 4.
    logged = first_run["evaluation"]
    assert sorted(logged[FID_KEY]) == sorted(logged[BITS_KEY]) == [2, 4]
    assert run.values(FID_KEY) == pytest.approx([logged[FID_KEY][step] for step in (2, 4)], rel=1e-6)
    assert run.values(BITS_KEY) == pytest.approx([logged[BITS_KEY][step] for step in (2, 4)], rel=1e-6)
    assert all(0 < value < 2000 for value in run.values(FID_KEY))

    # The images: a media file per evaluation, decoding to the PNG the callback wrote in the run folder.
    from PIL import Image

    entries = run.values(IMAGE_KEY)
    assert len(entries) == 2 and all(entry["_type"] == "images/separated" for entry in entries), entries
    for entry, step in zip(entries, (2, 4), strict=True):
        (path,) = entry["filenames"]
        stored = np.asarray(Image.open(directory / "files" / path))
        written = np.asarray(Image.open(run_folder_of(first_run["cli"]) / IMAGE_KEY / f"step-{step:08d}.png"))
        np.testing.assert_array_equal(stored.reshape(written.shape), written)

    # The full config (as parsed, with the offline decision) and the git state.
    config = run.config["config"]
    assert config["trainer"]["max_steps"] == 4
    assert config["model"]["prediction"] == "velocity"
    assert config["data"]["class_path"] == "si_lightning.data.DigitsDataModule"
    assert config["trainer"]["logger"]["init_args"]["offline"] is True
    assert run.config["git"] == {"commit": first_run["commit"], "dirty": True}

    # The config file lands in this run's own folder (save_dir/name/version, beside its checkpoints),
    # not in the bare save_dir that every W&B run would share.
    run_folder = first_run["save_dir"] / str(logger.name) / str(logger.version)
    assert (run_folder / "config.yaml").is_file() and (run_folder / "checkpoints").is_dir()
    assert not (first_run["save_dir"] / "config.yaml").exists()


@pytest.mark.timeout(300)
def test_resume_with_ckpt_path_last_continues_the_same_run(first_run):
    """The relaunch names no checkpoint (``--ckpt_path last``, what a requeued job runs): the run's newest
    checkpoint is found, and with it the W&B run id and the run directory."""
    save_dir = first_run["save_dir"]
    first_id = first_run["cli"].trainer.logger.version
    (checkpoint,) = save_dir.rglob("last.ckpt")
    assert torch.load(checkpoint, weights_only=True)[WANDB_RUN_ID_KEY] == first_id

    with pytest.MonkeyPatch.context() as patch:
        without_credentials(patch, first_run["root"])
        cli, evaluation = fit(fit_arguments(save_dir, max_steps=6) + ["--ckpt_path", "last"])

    assert cli.trainer.global_step == 6
    first, second = (read_offline_run(directory) for directory in offline_runs(save_dir))
    assert second.run_id == first.run_id == first_id
    assert cli.trainer.logger.version == first_id
    # The step axis continues: no row of the resumed run lies before the resume step.
    first_steps, second_steps = first.values("trainer/global_step"), second.values("trainer/global_step")
    # (at the resume step itself the restored run may log again, e.g. the epoch counter)
    assert second_steps and min(second_steps) >= max(first_steps) == 4, (first_steps, second_steps)
    assert max(second_steps) == 6
    assert second.values(FID_KEY) == pytest.approx([evaluation[FID_KEY][6]], rel=1e-6)  # one evaluation, at 6
    assert second.config["config"]["ckpt_path"] == str(checkpoint)
    assert run_folder_of(cli) == checkpoint.parent.parent  # the same run directory


# ------------------------------------------------------------------------------ the pieces, alone
def logger_config(offline: bool = False, log_model: bool = False, run_id: str | None = None, **extra) -> Namespace:
    init_args = Namespace(project="p", offline=offline, log_model=log_model, id=run_id, version=None)
    logger = Namespace(class_path="lightning.pytorch.loggers.WandbLogger", init_args=init_args)
    return Namespace(
        trainer=Namespace(logger=[Namespace(class_path="lightning.pytorch.loggers.CSVLogger"), logger]), **extra
    )


def wandb_init_args(config: Namespace) -> Namespace:
    return config.trainer.logger[1].init_args


def test_offline_without_credentials_online_with_a_key_or_an_explicit_mode():
    config = logger_config()
    choose_wandb_mode(config, environment={})
    assert wandb_init_args(config).offline is True
    for environment in ({"WANDB_API_KEY": "x" * 40}, {"WANDB_MODE": "online"}):
        config = logger_config()
        choose_wandb_mode(config, environment=environment)
        assert wandb_init_args(config).offline is False
    config = logger_config(log_model=True)  # uploading checkpoints cannot be done offline: left as asked
    choose_wandb_mode(config, environment={})
    assert wandb_init_args(config).offline is False


def test_resume_takes_the_checkpoint_run_id_unless_one_is_given(tmp_path):
    with_id, without_id = tmp_path / "with.ckpt", tmp_path / "without.ckpt"
    torch.save({WANDB_RUN_ID_KEY: "abc123", "global_step": 4}, with_id)
    torch.save({"global_step": 4}, without_id)

    config = logger_config(ckpt_path=str(with_id))
    assert resume_wandb_run(config) == "abc123" and wandb_init_args(config).id == "abc123"
    config = logger_config(run_id="mine", ckpt_path=str(with_id))
    resume_wandb_run(config)
    assert wandb_init_args(config).id == "mine"
    config = logger_config(ckpt_path=str(without_id))
    assert resume_wandb_run(config) is None and wandb_init_args(config).id is None
    config = logger_config(ckpt_path="last")  # resolved later by the Trainer: nothing to read here
    assert resume_wandb_run(config) is None and wandb_init_args(config).id is None


@needs_git
def test_git_state_reads_head_and_the_dirty_flag(tmp_path, monkeypatch):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    outside, repository = tmp_path / "outside", tmp_path / "repository"
    outside.mkdir()
    repository.mkdir()
    assert git_state(outside) is None
    (repository / "a.txt").write_text("a\n")
    git(repository, "init", "-q")
    git(repository, "add", "a.txt")
    git(repository, "commit", "-q", "-m", "a")
    head = git(repository, "rev-parse", "HEAD")
    (repository / "untracked.txt").write_text("not part of a commit\n")
    assert git_state(repository) == {"commit": head, "dirty": False}
    (repository / "a.txt").write_text("b\n")
    assert git_state(repository) == {"commit": head, "dirty": True}


class RecordingLogger:
    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        self.calls.append(params)


@pytest.mark.parametrize("rank_zero", [True, False])
def test_config_is_logged_once_to_every_logger_on_rank_zero_only(tmp_path, monkeypatch, rank_zero):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    loggers = [RecordingLogger(), RecordingLogger()]
    trainer = SimpleNamespace(is_global_zero=rank_zero, loggers=loggers)
    tracking = RunTracking(config={"model": {"prediction": "velocity"}}, git_directory=tmp_path)
    for stage in ("fit", "validate", "test"):
        tracking.setup(trainer, None, stage)
    expected = [{"config": {"model": {"prediction": "velocity"}}}] if rank_zero else []  # no git here
    assert [logger.calls for logger in loggers] == [expected, expected]
