"""From jsonargparse's reports and the classes' ValueErrors to ``error: key = value: expected``.

The messages below are jsonargparse's own (4.x), copied from runs of the CLI on bad configs; the
full CLI path is exercised by tests/integration/test_cli_fuzz.py.
"""

from __future__ import annotations

import io

import pytest

from si_lightning.config_errors import from_exception, from_parse_error, locate
from si_lightning.errors import ConfigurationError, run_reporting_errors, split_debug_flag

CALLBACK_IN_A_LIST = """Parser key "trainer.callbacks":
  Does not validate against any of the Union subtypes
  Subtypes: [list[lightning.pytorch.callbacks.callback.Callback], <class 'NoneType'>]
  Errors:
    - Problem with given class_path 'lightning.pytorch.callbacks.ModelCheckpoint':
        Parser key "save_last":
          Does not validate against any of the Union subtypes
          Subtypes: [<class 'bool'>, typing.Literal['link'], <class 'NoneType'>]
          Errors:
            - Expected a <class 'bool'>
            - Expected a typing.Literal['link']
            - Expected a <class 'NoneType'>
          Given value type: <class 'str'>
          Given value: maybe
    - Expected a <class 'NoneType'>
  Given value type: <class 'list'>
  Given value: [Namespace(class_path='si_lightning.callbacks.EMA', init_args=Namespace(decay=0.999)), {'class_path': \
'lightning.pytorch.callbacks.ModelCheckpoint', 'init_args': {'save_last': 'maybe'}}]"""

SAMPLER_IN_A_DICT = """Parser key "trainer.callbacks":
  Does not validate against any of the Union subtypes
  Errors:
    - Problem with given class_path 'si_lightning.callbacks.FIDCallback':
        Parser key "samplers":
          Does not validate against any of the Union subtypes
          Errors:
            - Does not validate against any of the Union subtypes
              Errors:
                - Import path si_lightning.sampling.SDESampler does not correspond to a subclass of ODESampler
                - Problem with given class_path 'si_lightning.sampling.SDESampler':
                    Parser key "steps":
                      Expected a <class 'int'>. Got value: twelve
              Given value type: <class 'dict'>
              Given value: {'class_path': 'si_lightning.sampling.SDESampler', 'init_args': {'steps': 'twelve'}}
            - Expected a <class 'NoneType'>
          Given value type: <class 'dict'>
          Given value: {'ode': Namespace(class_path='si_lightning.sampling.ODESampler'), 'sde': {'class_path': \
'si_lightning.sampling.SDESampler', 'init_args': {'steps': 'twelve'}}}
    - Expected a <class 'NoneType'>
  Given value type: <class 'list'>
  Given value: [{'class_path': 'si_lightning.callbacks.FIDCallback', 'init_args': {}}]"""

OPTIMIZER_OPTION = """Parser key "model.optimizer":
  Type typing.Callable[[collections.abc.Iterable], torch.optim.optimizer.Optimizer] expects a function or a \
callable class: Option 'momentumm' is not accepted. Got value: Namespace(class_path='torch.optim.SGD', \
init_args=Namespace(lr=0.1, momentumm=0.9))"""


@pytest.mark.parametrize(
    ("message", "key", "value", "expected"),
    [
        (CALLBACK_IN_A_LIST, "trainer.callbacks[1].init_args.save_last", "maybe", "expected one of: bool, typing"),
        (SAMPLER_IN_A_DICT, "trainer.callbacks[0].init_args.samplers.sde.init_args.steps", "twelve", "Expected a <"),
        (OPTIMIZER_OPTION, "model.optimizer.init_args.momentumm", "0.9", "Option 'momentumm' is not accepted"),
        ("Unrecognized arguments: fit --model.predictionn velocity", "model.predictionn", "velocity", "not a setting"),
        ("argument subcommand: invalid choice: 'fitt' (choose from 'fit', 'test')", "subcommand", "fitt", "fit, test"),
        ("the following arguments are required: fit.model.backbone", "model.backbone", None, "required setting"),
    ],
)
def test_parse_errors_name_the_full_key(message, key, value, expected):
    error = from_parse_error(message)
    assert (error.key, error.value) == (key, value)
    assert expected in error.expected and "\n" not in error.expected


CONFIG = {
    "model": {
        "prediction": "velocity",
        "backbone": {"class_path": "si_lightning.nn.UNet", "init_args": {"norm_groups": 7, "num_res_blocks": 1}},
    },
    "trainer": {
        "callbacks": [
            {"class_path": "x.ODE", "init_args": {"method": "heun", "steps": 20}},
            {"class_path": "x.Likelihood", "init_args": {"method": "rk4-typo", "steps": 1}},
        ]
    },
    "data": {"class_path": "x.Toy", "init_args": {"name": "spiral", "batch_size": 64}},
}


BACKBONE = "model.backbone.init_args"


@pytest.mark.parametrize(
    ("message", "base", "key", "value"),
    [
        ("UNet norm_groups=7 must divide model_channels=32", "model.backbone", f"{BACKBONE}.norm_groups", 7),
        ("unknown ODE method 'rk4-typo'; expected: heun", None, "trainer.callbacks[1].init_args.method", "rk4-typo"),
        ("unknown toy 'spiral'; expected one of: spirals, two-moons", "data", "data.init_args.name", "spiral"),
        ("channel_multipliers must be ints >= 1", "model.backbone", "model.backbone", "si_lightning.nn.UNet"),
    ],
)  # fmt: skip
def test_a_class_error_is_mapped_to_the_setting_it_names(message, base, key, value):
    assert locate(message, CONFIG, base) == (key, value)


def test_a_configuration_error_with_a_short_key_gets_the_full_key():
    error = from_exception(ConfigurationError("batch_size", 64, "at most 10 samples"), CONFIG, "data")
    assert (error.key, error.value, error.expected) == ("data.init_args.batch_size", 64, "at most 10 samples")


def test_exit_statuses_and_the_last_line():
    def bad_setting():
        raise ConfigurationError("trainer.max_steps", -5, "an integer >= 0, or -1 for no limit")

    def failure():
        raise RuntimeError("the disk is full\nsecond line")

    stream = io.StringIO()
    assert run_reporting_errors(lambda: None, stream=stream) == 0 and stream.getvalue() == ""
    assert run_reporting_errors(bad_setting, stream=stream) == 2
    assert stream.getvalue() == "error: trainer.max_steps = -5: an integer >= 0, or -1 for no limit\n"
    stream = io.StringIO()
    assert run_reporting_errors(failure, stream=stream) == 1
    assert stream.getvalue() == (
        "error: RuntimeError: the disk is full; second line (rerun with --debug for the traceback)\n"
    )
    stream = io.StringIO()
    assert run_reporting_errors(failure, debug=True, stream=stream) == 1
    text = stream.getvalue()
    assert text.startswith("Traceback (most recent call last)") and text.endswith(
        "error: RuntimeError: the disk is full; second line\n"
    )


def test_the_debug_switch(monkeypatch):
    monkeypatch.delenv("SI_LIGHTNING_DEBUG", raising=False)
    assert split_debug_flag(["fit", "--debug", "-c", "x.yaml"]) == (["fit", "-c", "x.yaml"], True)
    assert split_debug_flag(["fit"]) == (["fit"], False)
    monkeypatch.setenv("SI_LIGHTNING_DEBUG", "1")
    assert split_debug_flag(["fit"]) == (["fit"], True)
    monkeypatch.setenv("SI_LIGHTNING_DEBUG", "0")
    assert split_debug_flag(["fit"]) == (["fit"], False)
