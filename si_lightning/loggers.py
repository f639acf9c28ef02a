"""A CSV logger that keeps what earlier launches of the same run logged.

Lightning's CSVLogger deletes ``metrics.csv`` when its version directory is not empty, so a run
resumed into its own directory (``--ckpt_path last``) would lose the history of the launches before.
This one reads the existing header and appends; a step logged twice (before a kill and again after
the resume) appears twice, the later row being the resumed run's.
"""

from __future__ import annotations

import csv

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger as LightningCSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter


class AppendingExperimentWriter(ExperimentWriter):
    """Lightning's writer, appending to an existing ``metrics.csv`` instead of deleting it."""

    def __init__(self, log_dir: str) -> None:
        super().__init__(log_dir)
        if self._fs.isfile(self.metrics_file_path):
            with self._fs.open(self.metrics_file_path, "r", newline="") as file:
                self.metrics_keys = list(csv.DictReader(file).fieldnames or [])

    def _check_log_dir_exists(self) -> None:
        """Keep the files of earlier launches of this run."""


class CSVLogger(LightningCSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` (same arguments) that appends to a resumed run's metrics."""

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is None:
            self._fs.makedirs(self.root_dir, exist_ok=True)
            self._experiment = AppendingExperimentWriter(log_dir=self.log_dir)
        return self._experiment
