"""Command-line fuzz of ``sample`` and ``evaluate``: every bad command line ends in one clear line.

Each case (``command_fuzz_cases``) must end with exit status 2, a single stderr line
``error: <option> = <value>: <expected>`` naming the option the case changed, no traceback, and
nothing left in the working directory (no output folder). Every case calls ``main()`` in-process (the
path the console script takes, returning its exit status); the reported ones, which cover both
commands and every stage that refuses (parse, files, checkpoint, output folder), also run the real
executable.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from si_lightning.cli import main
from tests.commands.command_fuzz_cases import CommandCase, command_cases, prepare_inputs
from tests.commands.conftest import run_command

CASES = command_cases()
ERROR_LINE = re.compile(r"^error: (?P<key>\S+) = (?P<value>.*?): (?P<expected>.+)$")
QUICK_EVERY = 10  # every tenth in-process case is unmarked; the others are marked slow
# One case per refusing stage of each command runs through the executable too (the console script is
# main() behind a process start, about 7 CPU s each): parse, sample files, data config, data, checkpoint
# and output folder for evaluate; parse, checkpoint and output folder for sample.
REPORTED = {
    "evaluate:--samples:wrong-shape", "evaluate:--samples:text-file", "evaluate:--data-config:yaml-syntax",
    "evaluate:--kid-subset-size:zero", "evaluate:--num-real:above-the-data", "evaluate:--out:under-a-file",
    "evaluate:--sde-scales:negative:ckpt", "sample:--seeds:past-64-bits", "sample:--out:name-too-long",
    "sample:--decoder:image-model",
}  # fmt: skip
EXECUTABLE_CASES = [case for case in CASES if case.name in REPORTED]


@pytest.fixture(scope="module")
def case_files(digits_checkpoint, tmp_path_factory) -> dict[str, str]:
    return prepare_inputs(tmp_path_factory.mktemp("fuzz-inputs"), digits_checkpoint)


def check_outcome(case: CommandCase, status: int, stderr: str, workdir: Path) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, f"{case.name}: nothing on stderr (status {status})"
    assert status == 2, f"{case.name}: exit status {status}, last line: {lines[-1]}"
    assert len(lines) == 1, f"{case.name}: {len(lines)} lines on stderr:\n{stderr[-2000:]}"
    found = ERROR_LINE.match(lines[-1])
    assert found, f"{case.name}: not 'error: key = value: expected': {lines[-1]}"
    assert found.group("key") == case.key, f"{case.name}: wanted {case.key}, got {lines[-1]}"
    assert "Traceback" not in stderr
    left = sorted(path.name for path in workdir.iterdir())
    assert left == [], f"{case.name}: left behind {left}"


def workdir_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.setenv("SI_LIGHTNING_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("SI_LIGHTNING_DEBUG", raising=False)
    monkeypatch.chdir(workdir)
    return workdir


def test_there_are_enough_cases():
    assert len(CASES) >= 100 and len({case.name for case in CASES}) == len(CASES)
    assert {case.command for case in CASES} == {"sample", "evaluate"}
    assert {case.name for case in EXECUTABLE_CASES} == REPORTED


@pytest.mark.timeout(600)  # the first case waits for the session's digits checkpoint
@pytest.mark.parametrize(
    "case",
    [
        pytest.param(case, id=case.name, marks=() if index % QUICK_EVERY == 0 else pytest.mark.slow)
        for index, case in enumerate(CASES)
    ],
)
def test_bad_command_line_in_process(case, case_files, tmp_path, monkeypatch, capsys):
    workdir = workdir_for(tmp_path, monkeypatch)
    status = main(case.command_line(case_files))
    check_outcome(case, status, capsys.readouterr().err, workdir)


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", [pytest.param(case, id=case.name) for case in EXECUTABLE_CASES])
def test_bad_command_line_through_the_executable(case, case_files, tmp_path, monkeypatch):
    workdir = workdir_for(tmp_path, monkeypatch)
    completed = run_command(case.command_line(case_files), timeout=140, cwd=workdir)
    check_outcome(case, completed.returncode, completed.stderr, workdir)
