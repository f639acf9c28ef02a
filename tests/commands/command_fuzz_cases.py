"""Bad command lines of ``sample`` and ``evaluate``, each with the option its one-line refusal must name.

Each case changes one thing of a command line that would work (a digits checkpoint, its run's
config, small valid sample files): a value of the wrong type, out of range, a file that is missing
or of the wrong kind or shape, an option that does not apply to this model. ``prepare_inputs``
writes the files the cases read (outside the working directory the command runs in).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class CommandCase:
    """``si-lightning <command> <arguments>`` must exit 2 naming ``key``; ``{name}`` fields are file paths."""

    name: str
    command: str
    arguments: tuple[str, ...]
    key: str

    def command_line(self, files: dict[str, str]) -> list[str]:
        return [self.command, *(argument.format(**files) for argument in self.arguments)]


def prepare_inputs(directory: Path, checkpoint: Path) -> dict[str, str]:
    """The files of the cases, in ``directory``; returns the placeholders of ``CommandCase.arguments``."""
    directory.mkdir(parents=True, exist_ok=True)
    generator = np.random.default_rng(0)
    digits = generator.integers(0, 256, (16, 8, 8, 1), dtype=np.uint8)
    arrays = {
        "good": digits,
        "wrong_shape": generator.integers(0, 256, (8, 16, 16, 3), dtype=np.uint8),
        "nchw": digits.transpose(0, 3, 1, 2).copy(),
        "empty": np.zeros((0, 8, 8, 1), np.uint8),
        "single": digits[:1],
        "floats": digits.astype(np.float32),
        "three_dims": digits[..., 0],
    }
    files = {"ckpt": str(checkpoint), "config": str(checkpoint.parent.parent / "config.yaml")}
    for name, array in arrays.items():
        np.savez(directory / f"{name}.npz", arr_0=array)
        files[name] = str(directory / f"{name}.npz")
    np.savez(directory / "no_arr_0.npz", images=digits)
    np.save(directory / "bare.npy", digits)
    (directory / "bare.npy").rename(directory / "bare.npz")
    texts = {
        "text_npz": ("text.npz", "not an archive\n"),
        "text_ckpt": ("text.ckpt", "not a checkpoint\n"),
        "empty_ckpt": ("empty.ckpt", ""),
        "broken_yaml": ("broken.yaml", "data:\n  class_path: x\n  init_args: [1, 2\n"),
        "no_data_yaml": ("no-data.yaml", "model: {}\n"),
        "bad_data_yaml": ("bad-data.yaml", "data:\n  class_path: si_lightning.data.NoSuchData\n"),
        "list_yaml": ("list.yaml", "- 1\n- 2\n"),
        "a_file": ("a-file", "x"),
        "sampler_no_class": ("sampler-no-class.yaml", "init_args: {steps: 4}\n"),
        "sampler_bad_steps": (
            "sampler-bad-steps.yaml",
            "class_path: si_lightning.sampling.ODESampler\ninit_args: {method: heun, steps: 0}\n",
        ),
        "sampler_other_class": ("sampler-other.yaml", "class_path: torch.nn.Linear\ninit_args: {}\n"),
        "sampler_broken": ("sampler-broken.yaml", "class_path: [\n"),
    }
    for name, (file_name, text) in texts.items():
        (directory / file_name).write_text(text)
        files[name] = str(directory / file_name)
    files.update(no_arr_0=str(directory / "no_arr_0.npz"), bare=str(directory / "bare.npz"))
    torch.save({"weight": torch.zeros(3)}, directory / "foreign.ckpt")
    files["foreign_ckpt"] = str(directory / "foreign.ckpt")
    one_image, mixed = directory / "one-image", directory / "mixed-sizes"
    one_image.mkdir(exist_ok=True)
    mixed.mkdir(exist_ok=True)
    Image.fromarray(digits[0, ..., 0]).save(one_image / "0.png")
    Image.fromarray(digits[0, ..., 0]).save(mixed / "0.png")
    Image.fromarray(np.zeros((9, 9), np.uint8)).save(mixed / "1.png")
    files.update(one_image=str(one_image), mixed=str(mixed), folder=str(directory), missing=str(directory / "nope"))
    other_run = directory / "other-run"
    other_run.mkdir(exist_ok=True)
    (other_run / "record.json").write_text('{"status": "complete", "settings": {"seeds": "0-9"}}\n')
    files["other_run"] = str(other_run)
    files["long"] = "x" * 5000
    files["under_file"] = str(directory / "a-file" / "out")
    return files


SAMPLE = ("--ckpt", "{ckpt}", "--num-samples", "4", "--quiet", "--no-png")
EVALUATE_SAMPLES = ("--samples", "{good}", "--data-config", "{config}", "--extractor", "digits")
EVALUATE_CKPT = ("--ckpt", "{ckpt}", "--num-samples", "4", "--extractor", "digits")
SWEEP = (*EVALUATE_CKPT, "--sweep")


def _replace(base: tuple[str, ...], option: str, value: str | None) -> tuple[str, ...]:
    """``base`` with ``option`` given ``value`` (replacing its value if present; None: the option removed)."""
    arguments = list(base)
    if option in arguments:
        index = arguments.index(option)
        takes_value = index + 1 < len(arguments) and not arguments[index + 1].startswith("--")
        del arguments[index : index + (2 if takes_value else 1)]
    if value is not None:
        arguments += [option, value] if value != "" or option.startswith("--") else [option]
    return tuple(arguments)


def sample_cases() -> list[CommandCase]:
    """Bad ``sample`` command lines: one option changed each."""
    table: list[tuple[str, str, str | None, str]] = [  # (label, option, value, key)
        ("zero", "--num-samples", "0", "--num-samples"),
        ("negative", "--num-samples", "-3", "--num-samples"),
        ("not-a-number", "--num-samples", "four", "--num-samples"),
        ("fraction", "--num-samples", "1.5", "--num-samples"),
        ("too-many", "--num-samples", "1000000000", "--num-samples"),
        ("zero", "--batch-size", "0", "--batch-size"),
        ("negative", "--batch-size", "-1", "--batch-size"),
        ("not-a-number", "--batch-size", "many", "--batch-size"),
        ("zero", "--shard-size", "0", "--shard-size"),
        ("not-a-number", "--shard-size", "big", "--shard-size"),
        ("zero", "--devices", "0", "--devices"),
        ("not-a-number", "--devices", "two", "--devices"),
        ("unknown-name", "--accelerator", "tpu", "--accelerator"),
        ("unknown-name", "--weights", "best", "--weights"),
        ("unknown-name", "--sampler", "ode-heun-typo", "--sampler"),
        ("missing-file", "--sampler", "{missing}.yaml", "--sampler"),
        ("broken-yaml", "--sampler", "{sampler_broken}", "--sampler"),
        ("no-class-path", "--sampler", "{sampler_no_class}", "--sampler"),
        ("zero-steps", "--sampler", "{sampler_bad_steps}", "--sampler"),
        ("other-class", "--sampler", "{sampler_other_class}", "--sampler"),
        ("missing-file", "--ckpt", "{missing}", "--ckpt"),
        ("directory", "--ckpt", "{folder}", "--ckpt"),
        ("text-file", "--ckpt", "{text_ckpt}", "--ckpt"),
        ("empty-file", "--ckpt", "{empty_ckpt}", "--ckpt"),
        ("foreign", "--ckpt", "{foreign_ckpt}", "--ckpt"),
        ("missing", "--ckpt", None, "--ckpt"),
        ("empty", "--seeds", "", "--seeds"),
        ("letters", "--seeds", "a-b", "--seeds"),
        ("empty-range", "--seeds", "5-2", "--seeds"),
        ("repeated", "--seeds", "1,1", "--seeds"),
        ("fraction", "--seeds", "1.5", "--seeds"),
        ("past-64-bits", "--seeds", "0-99999999999999999999999", "--seeds"),
        ("too-many", "--seeds", "0-200000000", "--seeds"),
        ("unconditional", "--labels", "3", "--labels"),
        ("unconditional", "--guidance-scale", "2.0", "--guidance-scale"),
        ("not-a-number", "--guidance-scale", "strong", "--guidance-scale"),
        ("image-model", "--decoder", "none", "--decoder"),
        ("zero", "--scale", "0", "--scale"),
        ("negative", "--scale", "-1", "--scale"),
        ("not-a-number", "--scale", "nan", "--scale"),
        ("gaussian-base", "--inputs", "{good}", "--inputs"),
        ("a-file", "--out", "{a_file}", "--out"),
        ("under-a-file", "--out", "{under_file}", "--out"),
        ("name-too-long", "--out", "{long}", "--out"),
        ("another-run", "--out", "{other_run}", "--out"),
        ("unknown-option", "--no-such-option", "1", "--no-such-option"),
        ("two-marginal-model", "--to-marginal", "2", "--to-marginal"),
        ("not-a-number", "--to-marginal", "two", "--to-marginal"),
        ("two-marginal-model", "--from-marginal", "1", "--from-marginal"),
        ("unknown-name", "--path", "diagonal", "--path"),
    ]
    cases = []
    for label, option, value, key in table:
        base = (*SAMPLE, "--out", "out") if option != "--out" else SAMPLE
        arguments = _replace(base, option, value) if value != "" else (*_replace(base, option, None), option)
        cases.append(CommandCase(f"sample:{option}:{label}", "sample", arguments, key))
    cases.append(CommandCase("sample:--out:missing", "sample", SAMPLE, "--out"))
    cases.append(
        CommandCase(
            "sample:--seeds:count-differs", "sample", (*SAMPLE, "--out", "out", "--seeds", "0-9"), "--num-samples"
        )
    )
    return cases


def evaluate_cases() -> list[CommandCase]:
    """Bad ``evaluate`` command lines: one option changed each (samples from files, from the checkpoint, a sweep)."""
    table: list[tuple[str, tuple[str, ...], str, str | None, str]] = [  # (label, base, option, value, key)
        ("wrong-shape", EVALUATE_SAMPLES, "--samples", "{wrong_shape}", "--samples"),
        ("channels-first", EVALUATE_SAMPLES, "--samples", "{nchw}", "--samples"),
        ("empty", EVALUATE_SAMPLES, "--samples", "{empty}", "--samples"),
        ("one-image", EVALUATE_SAMPLES, "--samples", "{single}", "--samples"),
        ("text-file", EVALUATE_SAMPLES, "--samples", "{text_npz}", "--samples"),
        ("floats", EVALUATE_SAMPLES, "--samples", "{floats}", "--samples"),
        ("three-dims", EVALUATE_SAMPLES, "--samples", "{three_dims}", "--samples"),
        ("no-arr_0", EVALUATE_SAMPLES, "--samples", "{no_arr_0}", "--samples"),
        ("bare-array", EVALUATE_SAMPLES, "--samples", "{bare}", "--samples"),
        ("missing", EVALUATE_SAMPLES, "--samples", "{missing}", "--samples"),
        ("folder-of-one", EVALUATE_SAMPLES, "--samples", "{one_image}", "--samples"),
        ("mixed-sizes", EVALUATE_SAMPLES, "--samples", "{mixed}", "--samples"),
        ("other-shape", EVALUATE_SAMPLES, "--reference", "{wrong_shape}", "--samples"),
        ("text-file", EVALUATE_SAMPLES, "--reference", "{text_npz}", "--reference"),
        ("missing", EVALUATE_SAMPLES, "--reference", "{missing}", "--reference"),
        ("missing-file", EVALUATE_SAMPLES, "--data-config", "{missing}.yaml", "--data-config"),
        ("yaml-syntax", EVALUATE_SAMPLES, "--data-config", "{broken_yaml}", "--data-config"),
        ("no-data-section", EVALUATE_SAMPLES, "--data-config", "{no_data_yaml}", "--data-config"),
        ("unknown-class", EVALUATE_SAMPLES, "--data-config", "{bad_data_yaml}", "--data-config"),
        ("a-list", EVALUATE_SAMPLES, "--data-config", "{list_yaml}", "--data-config"),
        ("no-real-side", EVALUATE_SAMPLES, "--data-config", None, "--reference"),
        ("unknown-name", EVALUATE_SAMPLES, "--split", "nosuch", "--split"),
        ("negative", EVALUATE_SAMPLES, "--num-real", "-5", "--num-real"),
        ("one", EVALUATE_SAMPLES, "--num-real", "1", "--num-real"),
        ("above-the-data", EVALUATE_SAMPLES, "--num-real", "10000000", "--num-real"),
        ("not-a-number", EVALUATE_SAMPLES, "--num-real", "all", "--num-real"),
        ("zero", EVALUATE_SAMPLES, "--kid-subset-size", "0", "--kid-subset-size"),
        ("one", EVALUATE_SAMPLES, "--kid-subset-size", "1", "--kid-subset-size"),
        ("unknown-name", EVALUATE_SAMPLES, "--metrics", "fid,beauty", "--metrics"),
        ("empty", EVALUATE_SAMPLES, "--metrics", ",", "--metrics"),
        ("nll-without-model", EVALUATE_SAMPLES, "--metrics", "nll", "--metrics"),
        ("unknown-name", EVALUATE_SAMPLES, "--extractor", "vgg", "--extractor"),
        ("missing-weights", EVALUATE_SAMPLES, "--extractor", "inception", "--inception-weights"),
        ("zero", EVALUATE_SAMPLES, "--batch-size", "0", "--batch-size"),
        ("unknown-name", EVALUATE_SAMPLES, "--accelerator", "tpu", "--accelerator"),
        ("not-a-number", EVALUATE_SAMPLES, "--real-seed", "zero", "--real-seed"),
        ("a-file", EVALUATE_SAMPLES, "--out", "{a_file}", "--out"),
        ("under-a-file", EVALUATE_SAMPLES, "--out", "{under_file}", "--out"),
        ("name-too-long", EVALUATE_SAMPLES, "--out", "{long}", "--out"),
        ("with-samples", EVALUATE_SAMPLES, "--sweep", "", "--sweep"),
        ("both-sources", EVALUATE_SAMPLES, "--ckpt", "{ckpt}", "--ckpt"),
        ("neither-source", ("--extractor", "digits"), "--out", "out", "--ckpt"),
        ("missing-file", EVALUATE_CKPT, "--ckpt", "{missing}", "--ckpt"),
        ("foreign", EVALUATE_CKPT, "--ckpt", "{foreign_ckpt}", "--ckpt"),
        ("zero", EVALUATE_CKPT, "--num-samples", "0", "--num-samples"),
        ("empty-range", EVALUATE_CKPT, "--seeds", "9-0", "--seeds"),
        ("unknown-name", EVALUATE_CKPT, "--sampler", "euler", "--sampler"),
        ("not-finite", EVALUATE_CKPT, "--guidance-scale", "nan", "--guidance-scale"),
        ("unknown-name", EVALUATE_CKPT, "--weights", "best", "--weights"),
        ("yaml-syntax", EVALUATE_CKPT, "--data-config", "{broken_yaml}", "--data-config"),
        ("unknown-name", EVALUATE_CKPT, "--split", "nosuch", "--split"),
        ("unknown-name", (*EVALUATE_CKPT, "--metrics", "nll"), "--nll-split", "nosuch", "--nll-split"),
        ("zero", (*EVALUATE_CKPT, "--metrics", "nll"), "--nll-samples", "0", "--nll-samples"),
        ("unknown-name", (*EVALUATE_CKPT, "--metrics", "nll"), "--nll-divergence", "guess", "--nll-divergence"),
        ("negative", SWEEP, "--sde-scales", "-1", "--sde-scales"),
        ("not-finite", SWEEP, "--sde-scales", "inf", "--sde-scales"),
        ("not-a-number", SWEEP, "--sde-scales", "big", "--sde-scales"),
        ("zero", SWEEP, "--ode-steps", "0", "--ode-steps"),
        ("not-a-number", SWEEP, "--ode-steps", "5,x", "--ode-steps"),
        ("zero", SWEEP, "--sde-steps", "0", "--sde-steps"),
        ("unknown-name", SWEEP, "--ode-methods", "rk45", "--ode-methods"),
        ("unknown-name", SWEEP, "--sde-diffusions", "loud", "--sde-diffusions"),
    ]
    cases = []
    for label, base, option, value, key in table:
        name = f"evaluate:{option}:{label}" + (":ckpt" if "--ckpt" in base and option != "--ckpt" else "")
        base = (*base, "--out", "out") if option != "--out" and "--out" not in base else base
        arguments = _replace(base, option, value) if value != "" else (*_replace(base, option, None), option)
        cases.append(CommandCase(name, "evaluate", arguments, key))
    return cases


def command_cases() -> list[CommandCase]:
    return [*sample_cases(), *evaluate_cases()]
