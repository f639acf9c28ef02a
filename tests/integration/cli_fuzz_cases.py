"""Bad configs for the CLI fuzz test, each made from a shipped config by changing one setting.

A case is the config text to write (YAML), extra command-line arguments, and the key the one-line
error must name. The mutations are chosen per kind of value so that every one is a genuine error:
a wrong type, a size of zero or below, a probability outside [0, 1], an unknown name, an unknown
key, a missing required key, or a shape that does not fit the data.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.integration.config_files import load_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
DIGITS = CONFIGS / "experiments" / "digits.yaml"


@dataclass(frozen=True)
class Case:
    """One bad config: ``config`` (a dict written as YAML), extra ``arguments``, the ``key`` to be named."""

    name: str
    config: dict
    key: str
    arguments: tuple[str, ...] = field(default=())


def fast(config: dict) -> dict:
    """The config shortened so that a case that wrongly passes ends quickly instead of training for minutes."""
    config = copy.deepcopy(config)
    trainer = config.setdefault("trainer", {})
    trainer["max_steps"] = 2
    trainer["default_root_dir"] = "runs"
    return config


def base_configs() -> dict[str, dict]:
    """The shipped experiment, and the same with each overlay of configs/ merged in (lists replaced)."""
    digits = load_config(DIGITS)
    bases = {"digits": digits}
    overlays = ("callbacks/evaluation.yaml", "interpolant/trig.yaml", "interpolant/sbdm.yaml", "backbone/dit-s2.yaml")
    for overlay in overlays:
        bases[f"digits+{Path(overlay).stem}"] = merge(digits, load_config(CONFIGS / overlay))
    toy = merge(digits, load_config(CONFIGS / "data" / "toy-2d.yaml"))
    toy = merge(toy, load_config(CONFIGS / "backbone" / "mlp.yaml"))
    toy["trainer"]["callbacks"] = toy["trainer"]["callbacks"][:2]  # image callbacks do not apply to points
    bases["toy+mlp"] = toy
    return bases


def merge(base: dict, overlay: dict) -> dict:
    """``overlay`` over ``base`` as jsonargparse merges -c files: mappings merge, a new class_path replaces."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        old = merged.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            if "class_path" in value and value.get("class_path") != old.get("class_path"):
                merged[key] = copy.deepcopy(value)
            else:
                merged[key] = merge(old, value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def leaves(config: Any, path: tuple = ()) -> list[tuple[tuple, Any]]:
    """(path as a tuple of keys and list indices, value) for every scalar and list of scalars."""
    if isinstance(config, dict):
        return [item for key, value in config.items() for item in leaves(value, (*path, key))]
    if isinstance(config, list) and any(isinstance(item, dict) for item in config):
        return [item for index, value in enumerate(config) for item in leaves(value, (*path, index))]
    return [(path, config)]


def dotted(path: tuple) -> str:
    """The key as the CLI names it: ``trainer.callbacks[0].init_args.decay``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def replaced(config: dict, path: tuple, value: Any) -> dict:
    config = copy.deepcopy(config)
    node = config
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return config


def removed(config: dict, path: tuple) -> dict:
    config = copy.deepcopy(config)
    node = config
    for part in path[:-1]:
        node = node[part]
    del node[path[-1]]
    return config


# Settings where a value of zero or below is wrong, by their last key (every other int may be 0).
POSITIVE = {
    "batch_size", "image_size", "num_samples", "steps", "model_channels", "num_res_blocks", "norm_groups",
    "hidden_size", "num_layers", "probes", "patch_size", "devices", "log_every_n_steps", "val_check_interval",
    "every_n_steps",
}  # fmt: skip
# Settings that are a probability or a decay: in [0, 1] (or (0, 1)).
UNIT_INTERVAL = {"decay", "val_fraction"}
# Settings that are names from a registry, and the kind of name.
NAMES = {
    "schedule", "gamma", "prediction", "method", "diffusion", "extractor", "split", "divergence", "name",
    "preset", "dataset", "precision", "accelerator",
}  # fmt: skip
# Keys whose values are not checked here: paths and labels that any string fits, seeds (any integer).
FREE = {"default_root_dir", "save_dir", "seed_everything", "seed", "first_seed", "real_seed", "every_n_train_steps"}


def value_mutations(path: tuple, value: Any) -> list[tuple[str, Any]]:
    """(label, bad value) for one setting, by the kind of its value and its name."""
    name = next(part for part in reversed(path) if isinstance(part, str))
    if name in FREE or name == "init_args" or "logger" in path:
        return []
    if name == "class_path":
        module = str(value).rpartition(".")[0]
        return [("unknown-class", f"{module}.NoSuchClass"), ("not-a-class", "not a class path")]
    if isinstance(value, bool):
        return [("not-a-bool", "maybe")]
    mutations: list[tuple[str, Any]] = []
    if name in UNIT_INTERVAL:
        mutations += [("above-one", 1.5), ("negative", -0.5)]
    if isinstance(value, (int, float)) and name not in ("devices",):
        mutations.append(("not-a-number", "twelve"))
    if name in POSITIVE and isinstance(value, int):
        mutations += [("zero", 0), ("negative", -3)]
    if name in ("lr", "gradient_clip_val", "weight_decay"):
        mutations.append(("negative", -1.0))
    if name in NAMES and isinstance(value, str):
        mutations.append(("unknown-name", f"{value}-typo"))
    if isinstance(value, list) and name == "channel_multipliers":
        mutations += [("not-a-list", "wide"), ("zero-multiplier", [1, 0])]
    return mutations


def generated_cases() -> list[Case]:
    """Every single-setting mutation of the shipped experiment, and of each overlay the settings it changes.

    Plus an unknown key in every section and class, removed required keys, and shapes that do not fit.
    """
    cases: list[Case] = []
    seen: set[tuple[str, str, str]] = set()  # (key, value's class, mutation): each overlay adds only what is new
    for base_name, base in base_configs().items():
        base = fast(base)
        for path, value in leaves(base):
            key = dotted(path)
            for label, bad in value_mutations(path, value):
                expected = key
                if path[-1] == "class_path":  # the problem is reported for the whole entry
                    expected = dotted(path[:-1])
                if (key, repr(value), label) not in seen:
                    seen.add((key, repr(value), label))
                    cases.append(Case(f"{base_name}:{key}:{label}", replaced(base, path, bad), expected))
        for path, value in _mappings(base):
            key = dotted((*path, "no_such_option"))
            if (key, str(value.get("class_path")), "unknown-key") not in seen:
                seen.add((key, str(value.get("class_path")), "unknown-key"))
                cases.append(Case(f"{base_name}:{key}:unknown-key", replaced(base, (*path, "no_such_option"), 1), key))
    digits = base_configs()["digits"]
    for path in (("model", "backbone"), ("data",), ("model", "backbone", "class_path"), ("data", "class_path")):
        key = dotted(path[:-1] if path[-1] == "class_path" else path)
        cases.append(Case(f"digits:{dotted(path)}:missing", fast(removed(digits, path)), key))
    cases += shape_cases(digits)
    return cases


def _mappings(config: Any, path: tuple = ()) -> list[tuple[tuple, dict]]:
    """Every init_args mapping and the top-level sections: where an unknown key can be added."""
    found = []
    if isinstance(config, dict):
        if path and (path[-1] == "init_args" or len(path) == 1):
            found.append((path, config))
        for key, value in config.items():
            found += _mappings(value, (*path, key))
    elif isinstance(config, list):
        for index, value in enumerate(config):
            found += _mappings(value, (*path, index))
    return found


def images(dataset: str) -> dict:
    """An ImageDataModule entry whose data root does not exist."""
    arguments = {"dataset": dataset, "root": "no-such-folder", "image_size": 8, "batch_size": 4, "num_workers": 0}
    return {"class_path": "si_lightning.data.ImageDataModule", "init_args": arguments}


def shape_cases(digits: dict) -> list[Case]:
    """Settings each valid alone that do not fit the data or each other."""
    dit = merge(digits, load_config(CONFIGS / "backbone" / "dit-s2.yaml"))
    toy = merge(digits, load_config(CONFIGS / "data" / "toy-2d.yaml"))
    toy["trainer"]["callbacks"] = toy["trainer"]["callbacks"][:2]
    labels = {"class_path": "si_lightning.couplings.ClassLabels", "init_args": {"num_classes": 10}}
    backbone, data = ("model", "backbone", "init_args"), ("data", "init_args")
    sampler_steps = ("trainer", "callbacks", 2, "init_args", "samplers", "ode-heun", "init_args", "steps")
    three_labels = {**labels, "init_args": {"num_classes": 3}}
    table = [  # (name, base, path, bad value, the key the error must name)
        ("dit patch 3 on 8 px", dit, (*backbone, "patch_size"), 3, "model.backbone.init_args.patch_size"),
        ("dit patch 16 on 8 px", dit, (*backbone, "patch_size"), 16, "model.backbone.init_args.patch_size"),
        ("batch above data size", digits, (*data, "batch_size"), 5000, "data.init_args.batch_size"),
        ("unet norm groups 7", digits, (*backbone, "norm_groups"), 7, "model.backbone.init_args.norm_groups"),
        ("unet too deep", digits, (*backbone, "channel_multipliers"), [1, 2, 2, 2, 2], "model.backbone"),
        ("class labels on points", toy, (*data, "coupling"), labels, "data.init_args.coupling"),
        ("3 labels, 10 classes", digits, (*data, "coupling"), three_labels, "data.init_args.coupling"),
        ("ema decay 1.5", digits, ("trainer", "callbacks", 0, "init_args", "decay"), 1.5, "trainer.callbacks[0]"),
        ("sampler steps 0", digits, sampler_steps, 0, "trainer.callbacks[2].init_args.samplers.ode-heun"),
        ("val_check_interval 0", digits, ("trainer", "val_check_interval"), 0, "trainer.val_check_interval"),
        ("max_steps -5", digits, ("trainer", "max_steps"), -5, "trainer.max_steps"),
        ("limit_val_batches -1", digits, ("trainer", "limit_val_batches"), -1, "trainer.limit_val_batches"),
        ("log_every_n_steps 0", digits, ("trainer", "log_every_n_steps"), 0, "trainer.log_every_n_steps"),
        ("accumulate 0", digits, ("trainer", "accumulate_grad_batches"), 0, "trainer.accumulate_grad_batches"),
        ("devices 0", digits, ("trainer", "devices"), 0, "trainer.devices"),
        ("gradient_clip_val -1", digits, ("trainer", "gradient_clip_val"), -1, "trainer.gradient_clip_val"),
        ("adam betas above 1", digits, ("model", "optimizer", "init_args", "betas"), [1.5, 0.9], "model.optimizer"),
        ("val_fraction 1.5", digits, (*data, "val_fraction"), 1.5, "data.init_args.val_fraction"),
        ("val_fraction 0", digits, (*data, "val_fraction"), 0.0, "data.init_args.val_fraction"),
        ("num_workers -1", digits, (*data, "num_workers"), -1, "data.init_args.num_workers"),
        ("ema decay -0.1", digits, ("trainer", "callbacks", 0, "init_args", "decay"), -0.1, "trainer.callbacks[0]"),
        ("interpolant gamma_scale -1", digits, ("model", "interpolant", "init_args", "gamma_scale"), -1.0, "model"),
        ("unknown image dataset", digits, ("data",), images("cifar100"), "data.init_args.dataset"),
        ("cifar root missing", digits, ("data",), images("cifar10"), "data.init_args.root"),
        ("image folder root missing", digits, ("data",), images("image-folder"), "data.init_args.root"),
    ]
    return [Case(name, replaced(fast(base), path, bad), key) for name, base, path, bad, key in table]
