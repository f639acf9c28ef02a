"""`make demo` as a user runs it: ``python -m si_lightning.demo`` as a subprocess, shortened to a few steps."""

from __future__ import annotations

import csv
import sys

import pytest

from tests.integration.executable import last_line, run


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_demo_trains_evaluates_and_reports_the_floor_beside_each_fid(tmp_path):
    root = tmp_path / "runs"
    command = [
        sys.executable, "-m", "si_lightning.demo", "--trainer.max_steps", "10", "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root),
        "--trainer.logger.init_args.save_dir", str(root), "--seed_everything", "1",
    ]  # fmt: skip
    result = run(command, cwd=tmp_path, timeout=540)
    assert result.returncode == 0, result.stderr[-3000:]
    assert last_line(result.stdout).startswith("Wall time: "), result.stdout[-2000:]
    (directory,) = list(root.glob("digits/version_*"))
    assert (directory / "samples.png").stat().st_size > 0
    assert (directory / "checkpoints" / "last.ckpt").is_file()
    config = (directory / "config.yaml").read_text()
    assert "seed_everything: 1" in config and "seed: 1" in config  # --seed_everything seeds the data too
    with open(directory / "demo_metrics.csv") as handle:
        figures = {row["metric"]: float(row["value"]) for row in csv.DictReader(handle)}
    floor, noise = figures["fid-digits/real-vs-real/n500"], figures["fid-digits/gaussian-noise/n500"]
    # Two disjoint sets of 500 real digits are close; noise is two orders of magnitude further.
    assert 5.0 < floor < 30.0 and noise > 20 * floor, figures
    for sampler in ("ode-heun", "sde-euler-sigma"):
        fid = figures[f"fid-digits/{sampler}/n500"]
        assert fid > floor  # 10 steps of training are far from the data
        assert f"{sampler} (NFE " in result.stdout and f"(floor: real vs real {floor:.1f})" in result.stdout
    assert figures["wall_seconds"] > 0


def test_seed_everything_seeds_the_data_unless_the_data_seed_is_given():
    from si_lightning.demo import with_data_seed

    assert with_data_seed(["--seed_everything", "3"])[-2:] == ["--data.init_args.seed", "3"]
    assert with_data_seed(["--seed_everything=4"])[-1] == "--data.init_args.seed=4"
    assert with_data_seed(["--seed_everything", "3", "--data.init_args.seed", "7"]).count("--data.init_args.seed") == 1
    assert with_data_seed(["--trainer.max_steps", "5"]) == ["--trainer.max_steps", "5"]
