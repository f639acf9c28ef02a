"""``sample`` and ``evaluate`` read their options from YAML files (``-c``) like ``fit``; ``--print_config`` round-trips.

The config-file form runs through the real executable: a ``sampler:`` class_path block gives the
same samples, byte for byte, as the preset it spells out, and the config ``--print_config`` prints
reruns to the same record settings and samples as the command line it was printed from.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from si_lightning.cli import main
from si_lightning.commands import evaluate, sample
from tests.commands.conftest import run_command

# ode-euler-4 as a class_path block: the preset's arguments, every other argument at its default.
EULER_4 = {"class_path": "si_lightning.sampling.ODESampler", "init_args": {"method": "euler", "steps": 4}}


def last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""


def record(out: Path) -> dict:
    return json.loads((out / "record.json").read_text())


@pytest.mark.slow  # two launches of the executable (each imports torch and Lightning)
@pytest.mark.timeout(600)
def test_sample_config_file_and_print_config_round_trip(digits_checkpoint, tmp_path, capsys) -> None:
    flags = ["--ckpt", str(digits_checkpoint), "--num-samples", "6", "--no-png", "--quiet"]
    # The flags' samples, the reference, in this process (main is the executable's entry point).
    assert main(["sample", *flags, "--sampler", "ode-euler-4", "--out", str(tmp_path / "flags")]) == 0
    capsys.readouterr()

    # The config-file form, the sampler a class_path block, seeds a YAML list.
    config = tmp_path / "sample.yaml"
    options = {"ckpt": str(digits_checkpoint), "seeds": [0, 1, 2, 3, 4, 5], "sampler": EULER_4}
    config.write_text(yaml.safe_dump({**options, "out": str(tmp_path / "file"), "no_png": True, "quiet": True}))
    by_file = run_command(["sample", "-c", str(config)])
    assert by_file.returncode == 0, by_file.stderr[-3000:]
    assert last_line(by_file.stdout) == f"6 samples, 4.0 NFE per sample -> {tmp_path / 'file'}"
    assert sorted(path.name for path in (tmp_path / "file").iterdir()) == ["record.json", "samples.npz"]
    settings = record(tmp_path / "file")["settings"]
    assert settings["seeds"] == "0-5" and settings["sampler"]["init_args"]["steps"] == 4
    assert settings["sampler"]["init_args"]["method"] == "euler"
    assert (tmp_path / "file" / "samples.npz").read_bytes() == (tmp_path / "flags" / "samples.npz").read_bytes()

    # --print_config prints the full config and runs nothing; rerun from it: the same settings and samples.
    # (printed in this process: the executable's start-up is the slow part, and main is its entry point)
    again = ["--sampler", "ode-euler-4", "--out", str(tmp_path / "again")]
    assert main(["sample", *flags, *again, "--print_config"]) == 0
    shown = capsys.readouterr().out
    assert not (tmp_path / "again").exists()
    (tmp_path / "printed.yaml").write_text(shown)
    assert yaml.safe_load(shown)["sampler"] == "ode-euler-4"
    rerun = run_command(["sample", "-c", str(tmp_path / "printed.yaml")])
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert record(tmp_path / "again")["settings"] == record(tmp_path / "flags")["settings"]
    assert (tmp_path / "again" / "samples.npz").read_bytes() == (tmp_path / "flags" / "samples.npz").read_bytes()


@pytest.mark.timeout(120)
def test_print_config_round_trips_in_process(tmp_path, capsys) -> None:
    """Each command's printed config parses back to the options it was printed from (no checkpoint needed)."""
    cases = {
        sample: ["--ckpt", "a.ckpt", "--out", "o", "--seeds", "0-9,20", "--labels", "3", "--guidance-scale", "2"]
        + ["--sampler", json.dumps(EULER_4), "--batch-size", "7", "--no-png", "--accelerator", "cpu"],
        evaluate: ["--ckpt", "a.ckpt", "--sweep", "--ode-steps", "2,4", "--sde-scales", "0.5,1", "--metrics", "fid,kid"]
        + ["--nll-solver", "ode-rk4-20", "--num-real", "50", "--out", "o"],
    }
    for command, arguments in cases.items():
        expected = command.parser().parse(arguments)
        with pytest.raises(SystemExit) as stopped:
            command.parser().parse([*arguments, "--print_config"])
        assert stopped.value.code == 0
        path = tmp_path / f"{command.__name__}.yaml"
        path.write_text(capsys.readouterr().out)
        again = command.parser().parse(["-c", str(path)])
        assert {key: value for key, value in again.items() if key != "config"} == {
            key: value for key, value in expected.items() if key != "config"
        }, command.__name__


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("batch_size: 0\n", "error: --batch-size = 0: an integer >= 1"),
        ("num_samples: many\n", "error: --num-samples = many: an integer >= 1"),
        ("accelerator: tpu\n", "error: --accelerator = tpu: one of 'auto', 'cpu', 'cuda'"),
        ("no_such_key: 1\n", "error: no_such_key = None: an unknown option (see --help)"),
        ("sampler:\n  class_path: si_lightning.sampling.ODESampler\n  init_args: {steps: 0}\n", "error: --sampler = "),
    ],
)
def test_a_bad_config_file_value_is_one_line_naming_the_option(text, line, tmp_path, capsys) -> None:
    from si_lightning.cli import main

    config = tmp_path / "bad.yaml"
    config.write_text(f"ckpt: {tmp_path / 'missing.ckpt'}\nnum_samples: 4\nout: {tmp_path / 'out'}\n{text}")
    assert main(["sample", "-c", str(config)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(line), lines
    assert not (tmp_path / "out").exists()


@pytest.mark.timeout(120)
def test_debug_prints_the_traceback_before_the_one_line(tmp_path, capsys) -> None:
    from si_lightning.cli import main

    arguments = ["sample", "--ckpt", "a.ckpt", "--out", str(tmp_path / "out"), "--num-samples", "0"]
    assert main(arguments) == 2
    assert capsys.readouterr().err == "error: --num-samples = 0: an integer >= 1\n"
    assert main([*arguments, "--debug"]) == 2
    stderr = capsys.readouterr().err
    assert "Traceback" in stderr and stderr.splitlines()[-1] == "error: --num-samples = 0: an integer >= 1"
