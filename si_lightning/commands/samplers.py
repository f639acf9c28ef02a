"""Samplers by name (``SAMPLER_PRESETS``) or from a YAML file with ``class_path`` and ``init_args``.

Preset names: ``ode-{euler,heun,rk4}-{steps}`` (uniform grid), ``ode-{euler,heun,dpm++2m}-{grid}-{steps}``
with a grid of ``PRESET_GRIDS`` (uniform, cosine, logsnr, edm; dpm++2m is the exponential integrator, for
models with a Gaussian base), ``dopri5`` (atol = rtol = 1e-5), ``dopri5-{1e-3,1e-4}``,
``sde-{euler,heun}-{diffusion}-{steps}`` with a diffusion family of ``DIFFUSIONS`` at scale 1 and
the mean last step. A YAML file, or the ``sampler:`` block of a command's config file (``-c``),
states any ODESampler or SDESampler::

    class_path: si_lightning.sampling.SDESampler
    init_args: {steps: 250, diffusion: sigma, scale: 0.5, last_step: tweedie}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace

from si_lightning.errors import ConfigurationError
from si_lightning.sampling import DIFFUSIONS, ODESampler, SDESampler

SAMPLER_CLASSES: dict[str, type[ODESampler] | type[SDESampler]] = {
    "si_lightning.sampling.ODESampler": ODESampler,
    "si_lightning.sampling.SDESampler": SDESampler,
    "ODESampler": ODESampler,
    "SDESampler": SDESampler,
}


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler as it is recorded: the class and its arguments (JSON-serialisable)."""

    class_path: str
    init_args: dict[str, Any] = field(default_factory=dict)

    def build(self, key: str = "--sampler", value: Any = None) -> ODESampler | SDESampler:
        if self.class_path not in SAMPLER_CLASSES:
            raise ConfigurationError(key, value or self.class_path, f"class_path one of {sorted(SAMPLER_CLASSES)[:2]}")
        try:
            return SAMPLER_CLASSES[self.class_path](**self.init_args)
        except (TypeError, ValueError) as error:
            raise ConfigurationError(key, value or self.init_args, f"valid sampler arguments ({error})") from None

    def as_dict(self) -> dict[str, Any]:
        return {"class_path": self.class_path, "init_args": dict(self.init_args)}


def _ode(method: str, **arguments: Any) -> SamplerSpec:
    return SamplerSpec("si_lightning.sampling.ODESampler", {"method": method, **arguments})


def _sde(method: str, diffusion: str, steps: int) -> SamplerSpec:
    return SamplerSpec("si_lightning.sampling.SDESampler", {"steps": steps, "method": method, "diffusion": diffusion})


SDE_METHOD_NAMES = {"euler": "euler-maruyama", "heun": "heun"}
PRESET_STEPS = (1, 2, 4, 5, 8, 10, 16, 20, 25, 32, 50, 64, 100, 128, 250, 256, 500, 1000)

PRESET_GRIDS = ("uniform", "cosine", "logsnr", "edm")

SAMPLER_PRESETS: dict[str, SamplerSpec] = {
    **{
        f"ode-{method}-{steps}": _ode(method, steps=steps)
        for method in ("euler", "heun", "rk4")
        for steps in PRESET_STEPS
    },
    **{
        f"ode-{method}-{grid}-{steps}": _ode(method, steps=steps, grid=grid)
        for method in ("euler", "heun", "dpm++2m")
        for grid in PRESET_GRIDS
        for steps in PRESET_STEPS
    },
    "dopri5": _ode("dopri5", atol=1e-5, rtol=1e-5),
    "dopri5-1e-4": _ode("dopri5", atol=1e-4, rtol=1e-4),
    "dopri5-1e-3": _ode("dopri5", atol=1e-3, rtol=1e-3),
    **{
        f"sde-{short}-{diffusion}-{steps}": _sde(method, diffusion, steps)
        for short, method in SDE_METHOD_NAMES.items()
        for diffusion in DIFFUSIONS
        for steps in PRESET_STEPS
    },
}


# The type of a ``--sampler`` option: a preset name or YAML file (str), or a class_path/init_args block.
SamplerOption = str | ODESampler | SDESampler


def sampler_spec(value: str | dict | Namespace, key: str = "--sampler") -> SamplerSpec:
    """The preset named ``value``, the sampler stated in the YAML file ``value``, or ``value`` itself as a
    ``class_path``/``init_args`` block (a config file's ``sampler:`` block, parsed by jsonargparse into a
    Namespace holding every init argument, or that block written inline on the command line)."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as error:
            raise ConfigurationError(key, value, f"a YAML mapping ({error})".replace("\n", " ")) from None
    if isinstance(value, dict):
        return spec_from_mapping(value, key, value)
    if value in SAMPLER_PRESETS:
        return SAMPLER_PRESETS[value]
    path = Path(value)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        if not path.is_file():
            raise ConfigurationError(key, value, "a sampler YAML file that exists")
        try:
            content = yaml.safe_load(path.read_text())
        except yaml.YAMLError as error:
            raise ConfigurationError(key, value, f"a YAML file ({error})".replace("\n", " ")) from None
        return spec_from_mapping(content, key, value)
    examples = "ode-heun-50, ode-dpm++2m-logsnr-20, ode-heun-edm-32, dopri5, sde-euler-sigma-100"
    raise ConfigurationError(
        key, value, f"a sampler preset ({examples}, ...), a YAML file or a mapping with class_path/init_args"
    )


def spec_from_mapping(content: Any, key: str, value: Any) -> SamplerSpec:
    """The sampler of a ``class_path``/``init_args`` mapping, built once to refuse bad arguments now."""
    if not isinstance(content, dict) or "class_path" not in content:
        expected = "a YAML mapping with class_path (ODESampler or SDESampler) and init_args"
        raise ConfigurationError(key, value, expected)
    unknown = sorted(set(content) - {"class_path", "init_args"})
    if unknown or not isinstance(content.get("init_args") or {}, dict):
        raise ConfigurationError(key, value, "a mapping of class_path and init_args (a mapping of arguments) only")
    spec = SamplerSpec(str(content["class_path"]), dict(content.get("init_args") or {}))
    spec.build(key, value)
    return spec
