"""What the repository's text says about itself holds: every file it names exists, it cites no file
outside itself, and the SLURM advice of the README and of the preemption callback is the same."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
# Top-level folders whose files the text names by path (si_lightning/couplings/base.py, configs/...).
NAMED_FOLDERS = ("si_lightning", "tests", "configs", "docs", "benchmarks", "experiments", "scripts")
NAMED_PATH = re.compile(rf"(?<![\w/.$-])((?:{'|'.join(NAMED_FOLDERS)})/[\w./-]*\w/?)")
# What follows a pattern rather than a path: imagenet256-{superres,inpainting}.yaml, shard-*.pt, <name>, seed0-$grid.
PATTERN_CONTINUES = re.compile(r"[\w./-]*[{*<$]")
# Notes that lived beside the repository once, never in it (spelled in pieces so this file does not cite them).
OUTSIDE_FILES = tuple(name + ".md" for name in ("MATH", "DESIGN", "PITFALLS")) + ("shared" + "/",)
BINARY_SUFFIXES = (".png", ".jpg", ".npz", ".pt", ".ckpt", ".gz", ".zip")


def tracked_text_files() -> list[Path]:
    """The repository's tracked files that are text (its own, not outputs or caches)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files"], cwd=REPOSITORY, capture_output=True, text=True, check=True, timeout=60
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout")
    files = []
    for name in listed:
        path = REPOSITORY / name
        if name.endswith(BINARY_SUFFIXES) or not path.is_file():
            continue
        try:
            path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        files.append(path)
    return files


def test_every_file_the_repository_names_exists():
    """A path to a module that became a package, or to a test file that was renamed, is stale."""
    missing = []
    for path in tracked_text_files():
        text = path.read_text(encoding="utf-8")
        for match in NAMED_PATH.finditer(text):
            named = match.group(1).rstrip(".")
            if PATTERN_CONTINUES.match(text, match.end()) or path == Path(__file__).resolve():
                continue
            if not (REPOSITORY / named).exists():
                missing.append(f"{path.relative_to(REPOSITORY)}: {named}")
    assert not missing, "\n".join(missing)


def test_nothing_cites_a_file_outside_the_repository():
    citing = []
    for path in tracked_text_files():
        if path == Path(__file__).resolve():
            continue
        text = path.read_text(encoding="utf-8")
        # A name cited on its own, not inside a longer one (results/label-shared/ is the repository's own).
        citing += [
            f"{path.relative_to(REPOSITORY)}: {name}"
            for name in OUTSIDE_FILES
            if re.search(r"(?<![\w-])" + re.escape(name), text)
        ]
    assert not citing, "\n".join(citing)


def test_the_slurm_signal_advice_is_the_same_and_reaches_the_srun_tasks():
    """``--signal=B:...`` signals only the batch shell, which does not pass it to ``srun``'s tasks."""
    readme = (REPOSITORY / "README.md").read_text(encoding="utf-8")
    callback = (REPOSITORY / "si_lightning" / "callbacks" / "preemption.py").read_text(encoding="utf-8")
    advised = {
        "README.md": re.findall(r"#SBATCH --signal=(\S+)", readme),
        "preemption.py": re.findall(r"#SBATCH --signal=([^`\s]+)", callback),
    }
    assert all(len(values) == 1 for values in advised.values()), advised
    assert advised["README.md"] == advised["preemption.py"] == ["USR1@120"], advised
    sbatch_script = readme.split("#SBATCH --signal=", 1)[1].split("```", 1)[0]
    assert "\nsrun si-lightning fit " in sbatch_script and "srun si-lightning fit" in callback
