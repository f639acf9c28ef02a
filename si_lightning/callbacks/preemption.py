"""Preemption: SIGTERM (SIGUSR1 under SLURM, a first Ctrl-C) ends the run with a checkpoint at the current step.

Lightning's own SIGTERM handler only raises a clean exit (status 0) at the next batch and saves
nothing. Here the signal is noted by Lightning's handler (``trainer.received_sigterm``), the
training loop and the evaluation callbacks stop at their next batch boundary (``stop_if_preempted``),
and ``on_exception`` writes ``last.ckpt`` of the current step into the run's checkpoint folder, so
``--ckpt_path last`` continues exactly there. The `si-lightning` command then exits with status
128 + the signal number (143 for SIGTERM).

Under SLURM, put ``#SBATCH --signal=USR1@120`` in the batch script and start the run with
``srun si-lightning fit ...``: without ``B:`` SLURM sends SIGUSR1 to every task of the job's steps
(each rank ``srun`` started), while ``B:USR1@120`` would signal only the batch shell, which does not
pass it on to the ``srun`` step. SIGUSR1 is handled like SIGTERM, and with ``requeue`` the job is
put back in the queue (``scontrol requeue``) once the checkpoint is written; its relaunch with
``--ckpt_path last`` continues the run. SLURM's SIGTERM at the time limit also checkpoints, without
the requeue. The loggers are flushed with every checkpoint, so after a kill the logged metrics
reach the step before the checkpoint a resume starts from; Lightning writes the metrics of the
checkpoint's own last step right after the checkpoint (the checkpoint is taken in
``on_train_batch_end``, the step's metrics are logged after it), so only a kill landing in between
those two writes loses that one row.

A stop after the last step, inside the evaluations that end fit, is marked in its checkpoint
(``stopped_at_step``). Lightning skips the training loop of a run resumed at ``max_steps``, and
with it ``on_train_start``/``on_train_end``, where those evaluations run; resumed from such a
checkpoint, the loop runs both hooks anyway (``complete_end_of_fit``), so every evaluation the
stopped run owed is completed, and ``ModelCheckpoint(save_last=True)`` records it in ``last.ckpt``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import lightning.pytorch as pl
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import SIGTERMException

CHECKPOINT_NAME = "last.ckpt"


def stop_if_preempted(trainer: pl.Trainer | None) -> None:
    """Raise Lightning's SIGTERMException when the run was asked to stop; call between batches of long work."""
    if trainer is not None and trainer.received_sigterm:
        raise SIGTERMException()


def checkpoint_directory(trainer: pl.Trainer) -> Path:
    """Where the run's checkpoints go: the ModelCheckpoint's folder, else ``<run directory>/checkpoints``."""
    callback = trainer.checkpoint_callback
    dirpath = getattr(callback, "dirpath", None)
    if dirpath:
        return Path(dirpath)
    from si_lightning.callbacks.artifacts import run_directory

    return run_directory(trainer) / "checkpoints"


class Preemption(Callback):
    """Checkpoint at the current step when the run is stopped by SIGTERM (SIGUSR1 under SLURM, a first Ctrl-C).

    Args:
        requeue: under SLURM, requeue the job (``scontrol requeue``) after the checkpoint of a SIGUSR1.
    """

    def __init__(self, requeue: bool = True) -> None:
        super().__init__()
        self.requeue = bool(requeue)
        self.signal_received: int | None = None
        self.checkpoint_path: Path | None = None
        self._trainer: pl.Trainer | None = None
        self._previous_interrupt_handler: Any = None
        self.stopped_at_step: int | None = None  # the step of this run's preemption checkpoint
        self.resumed_stop_step: int | None = None  # the step of the preemption checkpoint this run resumed from
        self.training_started = False

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":
            self.stopped_at_step = self.resumed_stop_step = None
            self.training_started = False
            complete_end_of_fit(trainer, self.owes_end_of_fit)

    def owes_end_of_fit(self, trainer: pl.Trainer) -> bool:
        """Whether the training loop was skipped although the checkpoint it resumed from was stopped at its step."""
        step = trainer.global_step
        return not self.training_started and self.resumed_stop_step is not None and step == self.resumed_stop_step > 0

    def state_dict(self) -> dict[str, int]:
        """Only a preemption checkpoint holds state (others stay loadable by a Trainer without this callback)."""
        return {} if self.stopped_at_step is None else {"stopped_at_step": self.stopped_at_step}

    def load_state_dict(self, state_dict: dict[str, int | None]) -> None:
        self.resumed_stop_step = state_dict.get("stopped_at_step")

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Lightning has registered its handlers by now; under SLURM SIGUSR1 becomes a stop like SIGTERM."""
        self._trainer = trainer
        self.signal_received = None
        self.training_started = True
        if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
            return
        if SLURMEnvironment.detect() and sys.platform != "win32":
            signal.signal(signal.SIGUSR1, self._stop_on_signal)
        previous = signal.getsignal(signal.SIGTERM)

        def note_sigterm(signum: int, frame: FrameType | None) -> None:
            self.signal_received = signum
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGTERM, note_sigterm)
        self._previous_interrupt_handler = signal.signal(signal.SIGINT, self._stop_on_interrupt)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        """Give Ctrl-C back its previous meaning once the trainer is done."""
        previous, self._previous_interrupt_handler = self._previous_interrupt_handler, None
        if previous is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, previous)

    def _stop_on_interrupt(self, signum: int, frame: FrameType | None) -> None:
        """The first Ctrl-C stops like SIGTERM (a checkpoint of the current step, status 130); a second one
        raises KeyboardInterrupt at once."""
        signal.signal(signal.SIGINT, signal.default_int_handler)
        print(
            "si-lightning: interrupted; stopping after this step with a checkpoint (Ctrl-C again to quit now)",
            file=sys.stderr,
            flush=True,
        )
        self._stop_on_signal(signum, frame)

    def _stop_on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signal_received = signum
        if self._trainer is not None:
            self._trainer._signal_connector.received_sigterm = True

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict) -> None:
        """Flush the loggers with every checkpoint, so the metrics of the steps it holds survive a kill."""
        for logger in trainer.loggers:
            logger.save()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if isinstance(exception, KeyboardInterrupt):  # a second Ctrl-C: no checkpoint, the command says where
            exception.global_step = trainer.global_step  # type: ignore[attr-defined]
            return
        if not isinstance(exception, SIGTERMException) or trainer.state.fn != TrainerFn.FITTING:
            return
        signum = self.signal_received if self.signal_received is not None else int(signal.SIGTERM)
        exception.signal_number = signum  # type: ignore[attr-defined]
        exception.global_step = trainer.global_step  # type: ignore[attr-defined]
        if trainer.global_step > 0:
            path = checkpoint_directory(trainer) / CHECKPOINT_NAME
            self.stopped_at_step = trainer.global_step  # saved with the checkpoint (state_dict)
            # Every rank takes part; rank 0 writes, atomically. A full checkpoint (Lightning says so otherwise).
            trainer.save_checkpoint(path, weights_only=False)
            self.checkpoint_path = path
            exception.checkpoint_path = path  # type: ignore[attr-defined]
        if signum == getattr(signal, "SIGUSR1", None) and self.requeue and trainer.is_global_zero:
            requeue_slurm_job()


def complete_end_of_fit(trainer: pl.Trainer, owed: Callable[[pl.Trainer], bool]) -> None:
    """Make ``trainer.fit_loop`` run its skipped ``on_train_start`` and ``on_train_end`` hooks when ``owed(trainer)``.

    Lightning returns from the fit loop before any hook when ``max_steps`` (or ``max_epochs``) was
    already reached at the resume; a run stopped inside its end-of-fit evaluations still owes them.
    The loop is wrapped once per trainer.
    """
    loop = trainer.fit_loop
    if getattr(loop, "completes_end_of_fit", False):
        return
    run = loop.run

    def run_then_complete() -> None:
        run()
        if owed(trainer):
            loop.on_run_start()  # the on_train_start hooks: a periodic evaluation due at this step
            loop.on_run_end()  # the on_train_end hooks: the end-of-fit evaluations, EMA, save_last

    loop.run = run_then_complete
    loop.completes_end_of_fit = True


def requeue_slurm_job() -> int:
    """``scontrol requeue`` this SLURM job (array jobs included); returns scontrol's exit status."""
    array_job, array_task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    job = f"{array_job}_{array_task}" if array_job and array_task else os.environ.get("SLURM_JOB_ID", "")
    if not job:
        return 1
    try:
        return subprocess.call(["scontrol", "requeue", job])
    except FileNotFoundError:
        return 127


def preemption_summary(exception: BaseException) -> tuple[int, str]:
    """(exit status 128 + signal, one line) for a run stopped by a signal."""
    signum = int(getattr(exception, "signal_number", signal.SIGTERM))
    name = signal.Signals(signum).name
    step = getattr(exception, "global_step", None)
    path = getattr(exception, "checkpoint_path", None)
    where = f" at global step {step}" if step is not None else ""
    saved = f"; checkpoint written to {path}" if path is not None else "; no checkpoint (no step was taken)"
    return 128 + signum, f"stopped by {name}{where}{saved}"


__all__ = [
    "Preemption",
    "checkpoint_directory",
    "complete_end_of_fit",
    "preemption_summary",
    "requeue_slurm_job",
    "stop_if_preempted",
]
