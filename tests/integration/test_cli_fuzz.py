"""Config fuzz: bad configs made from the shipped ones, one setting changed each, end in one clear line.

Each case must end with exit status 2, a last stderr line ``error: <key> = <value>: <expected>``
naming the changed setting (or the class entry that holds it), no traceback, and no run directory
left in the working directory. Most cases call ``main()`` in-process (the same error path as the
executable: it returns the status the console script exits with); some run the real executable.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from si_lightning.cli import main
from tests.integration.cli_fuzz_cases import Case, generated_cases

CASES = generated_cases()
EXECUTABLE = Path(sys.executable).parent / "si-lightning"
ERROR_LINE = re.compile(r"^error: (?P<key>\S+) = (?P<value>.*?): (?P<expected>.+)$")
QUICK_EVERY = 10  # every tenth case is unmarked; the others are marked slow (-m "not slow" skips them)
# Every 45th case also runs through the executable (5 of them, spread over the kinds of bad value): the
# console script calls the same main(), so these check the exit status and stderr of a real process;
# each start-up costs about 7 s of CPU.
SUBPROCESS_EVERY = 45


def prepared(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory holding only the case's config; caches go elsewhere."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "config.yaml").write_text(yaml.safe_dump(case.config, sort_keys=False))
    monkeypatch.setenv("SI_LIGHTNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SI_LIGHTNING_DEBUG", raising=False)
    monkeypatch.chdir(workdir)
    return workdir


def check_outcome(case: Case, status: int, stderr: str, workdir: Path) -> None:
    lines = stderr.strip().splitlines()
    assert lines, f"{case.name}: nothing on stderr (status {status})"
    assert status == 2, f"{case.name}: exit status {status}, last line: {lines[-1]}"
    found = ERROR_LINE.match(lines[-1])
    assert found, f"{case.name}: last line is not 'error: key = value: expected': {lines[-1]}"
    assert found.group("key").startswith(case.key), f"{case.name}: wanted {case.key}, got {lines[-1]}"
    assert "Traceback" not in stderr, f"{case.name}: a traceback was printed"
    left = sorted(path.name for path in workdir.iterdir() if path.name != "config.yaml")
    assert left == [], f"{case.name}: left behind {left}"


def in_process(case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    workdir = prepared(case, tmp_path, monkeypatch)
    status = main(["fit", "-c", "config.yaml", *case.arguments])
    check_outcome(case, status, capsys.readouterr().err, workdir)


def case_parameters(selected: list[Case], quick_every: int | None) -> list:
    return [
        pytest.param(case, id=case.name, marks=() if quick_every and index % quick_every == 0 else pytest.mark.slow)
        for index, case in enumerate(selected)
    ]


def test_there_are_enough_cases_of_every_kind():
    kinds = {case.name.rsplit(":", 1)[-1] for case in CASES if ":" in case.name}
    assert len(CASES) >= 200
    assert {"negative", "zero", "not-a-number", "unknown-name", "unknown-key", "unknown-class", "missing"} <= kinds
    assert len(CASES[::SUBPROCESS_EVERY]) >= 5


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", case_parameters(CASES, QUICK_EVERY))
def test_bad_config_in_process(case, tmp_path, monkeypatch, capsys):
    in_process(case, tmp_path, monkeypatch, capsys)


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("case", case_parameters(CASES[::SUBPROCESS_EVERY], None))
def test_bad_config_through_the_executable(case, tmp_path, monkeypatch):
    workdir = prepared(case, tmp_path, monkeypatch)
    environment = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    result = subprocess.run(
        [str(EXECUTABLE), "fit", "-c", "config.yaml", *case.arguments],
        cwd=workdir,
        env=environment,
        capture_output=True,
        text=True,
        timeout=170,
    )
    check_outcome(case, result.returncode, result.stderr, workdir)
