"""`make demo` as a user runs it: ``python -m si_lightning.demo`` as a subprocess, shortened to a few steps."""

from __future__ import annotations

import csv
import sys

import pytest
import yaml

from tests.integration.executable import REPOSITORY, last_line, run

CALLBACKS = REPOSITORY / "configs" / "callbacks" / "digits-generation.yaml"
SAMPLES = 200  # the FID's N in this test (the demo's 500 for a user); the floor is measured at the same N


def fewer_samples(directory) -> str:
    """The demo's callbacks list with the FID on SAMPLES samples and bits/dim on 32: the same path, shorter."""
    callbacks = yaml.safe_load(CALLBACKS.read_text())
    for callback in callbacks:
        arguments = callback.get("init_args") or {}
        if callback["class_path"].endswith("FIDCallback"):
            arguments.update(num_samples=SAMPLES, batch_size=SAMPLES)
        if callback["class_path"].endswith("LikelihoodCallback"):
            arguments.update(num_samples=32, batch_size=32)
    path = directory / "callbacks.yaml"
    path.write_text(yaml.safe_dump(callbacks, sort_keys=False))
    return str(path)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_the_demo_trains_evaluates_and_reports_the_floor_beside_each_fid(tmp_path):
    root = tmp_path / "runs"
    command = [
        sys.executable, "-m", "si_lightning.demo", "--trainer.max_steps", "10", "--trainer.accelerator", "cpu",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(root),
        "--trainer.logger.init_args.save_dir", str(root), "--seed_everything", "1",
        "--trainer.callbacks", fewer_samples(tmp_path),
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
    floor, noise = figures[f"fid-digits/real-vs-real/n{SAMPLES}"], figures[f"fid-digits/gaussian-noise/n{SAMPLES}"]
    # Two disjoint sets of 200 real digits are close; noise is an order of magnitude further. (The FID's bias
    # grows as N falls: at N = 200 the floor measured 77 and noise 1027; at the demo's N = 500, 13 and over 20x.)
    assert 5.0 < floor < 150.0 and noise > 8 * floor, figures
    for sampler in ("ode-heun", "sde-euler-sigma"):
        fid = figures[f"fid-digits/{sampler}/n{SAMPLES}"]
        assert fid > floor  # 10 steps of training are far from the data
        assert f"{sampler} (NFE " in result.stdout and f"(floor: real vs real {floor:.1f})" in result.stdout
    assert figures["wall_seconds"] > 0


def test_seed_everything_seeds_the_data_unless_the_data_seed_is_given():
    from si_lightning.demo import with_data_seed

    assert with_data_seed(["--seed_everything", "3"])[-2:] == ["--data.init_args.seed", "3"]
    assert with_data_seed(["--seed_everything=4"])[-1] == "--data.init_args.seed=4"
    assert with_data_seed(["--seed_everything", "3", "--data.init_args.seed", "7"]).count("--data.init_args.seed") == 1
    assert with_data_seed(["--trainer.max_steps", "5"]) == ["--trainer.max_steps", "5"]
