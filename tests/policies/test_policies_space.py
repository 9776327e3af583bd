"""Search spaces: helpers, validation, dict/JSON/YAML forms, conditions, encodings."""

from __future__ import annotations

import math

import numpy as np
import pytest
from assay.errors import UserInputError
from assay.policies import SearchSpace, choice, fixed, integer, loguniform, uniform
from assay.policies.searchers._encoding import GPEncoder

SPEC_YAML = """
lr: {loguniform: [1.0e-4, 1.0]}
hidden: {integer: [16, 256]}
act: {choice: [relu, gelu]}
epochs: 30
"""


def test_space_parses_the_dict_form_of_the_issue():
    space = SearchSpace.from_yaml(SPEC_YAML)
    assert space["lr"] == loguniform(1e-4, 1.0)
    assert space["hidden"] == integer(16, 256)
    assert space["act"] == choice(["relu", "gelu"])
    assert space["epochs"] == fixed(30)
    assert space.tunable == ("lr", "hidden", "act")


@pytest.mark.parametrize("form", ["dict", "json", "yaml"])
def test_space_round_trips_through_every_form(form, conditional_space):
    space = SearchSpace({
        **dict(conditional_space),
        "width": integer(8, 512, log=True),
        "dropout": uniform(0.0, 0.5),
        "tags": fixed({"team": "vision"}),
        "epochs": 30,
    })
    if form == "dict":
        back = SearchSpace.from_dict(space.to_dict())
    elif form == "json":
        back = SearchSpace.from_json(space.to_json())
    else:
        back = SearchSpace.from_yaml(space.to_yaml())
    assert back == space
    assert back["momentum"].when == {"optimizer": ("sgd",)}


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: uniform(1.0, 1.0), "empty range"),
        (lambda: uniform(2.0, 1.0), "low >= high"),
        (lambda: loguniform(-1.0, 1.0), "zero or below"),
        (lambda: loguniform(0.0, 1.0), "zero or below"),
        (lambda: integer(0, 10, log=True), "zero or below"),
        (lambda: integer(1.5, 3), "whole-number"),
        (lambda: integer(3, 3), "empty range"),
        (lambda: uniform(0.0, math.inf), "finite"),
        (lambda: uniform(-1e308, 1e308), "too wide"),  # samplers overflowed or gave inf
        (lambda: integer(1, 1e30), "beyond 2**53"),  # configs above int64 were suggested
        (lambda: integer(-(2**60), 0), "beyond 2**53"),
        (lambda: uniform("a", 1.0), "number"),
        (lambda: choice([]), "no options"),
        (lambda: choice("relu"), "list of options"),
        (lambda: choice(["a", "a"]), "repeats"),
        (lambda: SearchSpace({}), "at least one"),
        (lambda: SearchSpace({"lr": {"logunifrm": [1e-4, 1.0]}}), "unknown parameter type"),
        (lambda: SearchSpace({"lr": {"uniform": [1.0]}}), "[low, high]"),
        (lambda: SearchSpace({"lr": {"uniform": [0, 1], "loguniform": [1, 2]}}), "exactly one"),
        (lambda: SearchSpace({"x": {"choice": ["a"], "log": True}}), "unexpected keys"),
        (lambda: SearchSpace({"m": uniform(0, 1, when={"opt": "sgd"})}), "not defined before"),
        (lambda: SearchSpace({"opt": choice(["sgd"]), "m": uniform(0, 1, when={"opt": "adam"})}),
         "domain"),
        (lambda: SearchSpace.from_yaml("lr: [unclosed"), "YAML"),
        (lambda: SearchSpace.from_json("{"), "JSON"),
    ],
)
def test_space_rejects_bad_specs_with_a_clear_message(make, words):
    with pytest.raises(UserInputError) as err:
        make()
    assert words in str(err.value)


def test_space_names_the_parameter_in_spec_errors():
    with pytest.raises(UserInputError, match="parameter 'lr'") as err:
        SearchSpace({"lr": {"loguniform": [-1.0, 1.0]}})
    assert err.value.hint


def test_space_validates_configs(mixed_space):
    good = {"lr": 0.01, "depth": 3, "dropout": 0.1, "act": "gelu", "epochs": 10}
    assert mixed_space.validate(good) == good
    assert mixed_space.contains(good)
    for bad in ({**good, "lr": 0.5}, {**good, "depth": 2.5}, {**good, "act": "elu"},
                {k: v for k, v in good.items() if k != "depth"}, {**good, "depth": True}):
        assert not mixed_space.contains(bad)
        with pytest.raises(UserInputError):
            mixed_space.validate(bad)


def test_space_drops_inactive_conditional_parameters(conditional_space):
    rng = np.random.default_rng(0)
    configs = [conditional_space.sample(rng) for _ in range(40)]
    assert {c["optimizer"] for c in configs} == {"sgd", "adam"}
    for c in configs:
        assert ("momentum" in c) == (c["optimizer"] == "sgd")
    adam = {"optimizer": "adam", "lr": 0.01, "momentum": 0.5}
    assert conditional_space.validate(adam) == {"optimizer": "adam", "lr": 0.01}
    with pytest.raises(UserInputError, match="lacks parameter 'momentum'"):
        conditional_space.validate({"optimizer": "sgd", "lr": 0.01})


def test_space_samples_log_parameters_log_uniformly():
    space = SearchSpace({"lr": loguniform(1e-6, 1.0)})
    rng = np.random.default_rng(0)
    logs = np.log10([space.sample(rng)["lr"] for _ in range(2000)])
    assert abs(np.median(logs) + 3.0) < 0.2


def test_space_unit_cube_round_trip(mixed_space):
    rng = np.random.default_rng(1)
    for _ in range(50):
        config = mixed_space.sample(rng)
        back = mixed_space.from_unit(mixed_space.to_unit(config))
        assert back["depth"] == config["depth"] and back["act"] == config["act"]
        assert back["lr"] == pytest.approx(config["lr"], rel=1e-9)


def test_space_grid_covers_every_choice_and_skips_inactive_duplicates(conditional_space):
    grid = list(conditional_space.grid(3))
    assert len(grid) == 3 * 3 + 3  # sgd x momentum x lr, adam x lr
    assert len({conditional_space.key(c) for c in grid}) == len(grid)
    with pytest.raises(UserInputError):
        list(conditional_space.grid(0))


def test_integer_grid_and_log_integer_bounds():
    assert integer(1, 3).grid(10) == [1, 2, 3]
    values = {integer(16, 256, log=True).from_unit(u) for u in np.linspace(0, 1, 101)}
    assert min(values) == 16 and max(values) == 256


def test_choice_does_not_confuse_booleans_and_numbers():
    space = SearchSpace({"x": choice([1, 2]), "flag": choice([True, False])})
    assert not space.contains({"x": True, "flag": True})
    assert not space.contains({"x": 1, "flag": 1})
    assert space.contains({"x": 1.0, "flag": False})


def test_gp_encoder_one_hot_round_trip(mixed_space, conditional_space):
    enc = GPEncoder(mixed_space)
    assert enc.dim == 3 + 3  # lr, depth, dropout + 3 one-hot columns
    rng = np.random.default_rng(2)
    for _ in range(20):
        c = mixed_space.sample(rng)
        assert enc.decode(enc.encode(c))["act"] == c["act"]
    relaxed = np.array([0.5, 0.49, 0.2, 0.1, 0.7, 0.3])
    assert enc.decode(relaxed)["act"] == "gelu"
    cenc = GPEncoder(conditional_space)
    x = cenc.encode({"optimizer": "adam", "lr": 0.01})
    assert "momentum" not in cenc.decode(x)


def test_space_key_is_stable_under_float_noise_and_inactive_values(conditional_space):
    a = {"optimizer": "adam", "lr": 0.1}
    b = {"optimizer": "adam", "lr": 0.1 + 1e-14, "momentum": 0.3}
    assert conditional_space.key(a) == conditional_space.key(b)
