"""``mtssl plugins --json`` lists each component's options (type, default, range, choices, description), and a
strategy or weighting that declares its options as ``options_model`` has them read by its base class."""
from __future__ import annotations

import json
from typing import Literal

import pytest
from pydantic import Field

from conftest import invoke
from mtssl.api import SSLStrategy, Weighting
from mtssl.options import Options, declared_options, describe_options

OPTIONED_PLUGIN = '''
"""A third-party strategy registered by reference, and a function factory naming its options model."""
from mtssl.api import hookimpl


@hookimpl
def register_strategies(register):
    register("sharpen", "mtssl_demo_options_impl:Sharpen", description="sharpened pseudo-labels")
    register("gauge", "mtssl_demo_options_impl:gauge")
    register("missing", "mtssl_demo_options_impl:NoSuchClass")
'''

OPTIONED_IMPL = '''
from typing import Literal

from mtssl.api import Field, Options, SSLStrategy, read_options


class SharpenOptions(Options):
    T: float = Field(0.5, gt=0, le=1, description="temperature of the sharpened guess")
    target: Literal["hard", "soft"] = "soft"
    bank: int = Field(description="labeled embeddings kept")


class Sharpen(SSLStrategy):
    def __init__(self, name, **options):
        settings = read_options(f"strategy '{name}'", options, SharpenOptions)
        super().__init__(name, **options)


class GaugeOptions(Options):
    level: int = Field(3, ge=0)


def gauge(name, **options):
    level = int(options.pop("level", 3))  # reads its options by hand, and names the model that documents them
    return level


gauge.options_model = GaugeOptions
'''


def listing() -> dict[str, dict]:
    result = invoke(["plugins", "--json"])
    assert result.exit_code == 0, result.output
    return {row["name"]: row for row in json.loads(result.stdout)["components"]}


def test_json_lists_first_party_options_with_defaults_and_ranges():
    rows = listing()
    threshold, weight = rows["fixmatch"]["options"]
    assert threshold == {"name": "threshold", "type": "float", "default": 0.7, "range": "0.0 <= x <= 1.0",
                         "choices": None, "description": "weak-view confidence a pseudo-label needs"}
    assert (weight["name"], weight["default"], weight["range"]) == ("weight", 0.25, "x >= 0.0")
    pairing = next(o for o in rows["kl"]["options"] if o["name"] == "pairing")
    assert (pairing["type"], pairing["default"], pairing["choices"]) == ("choice", "mean", ["mean", "index"])
    experts, = rows["mmoe"]["options"]
    assert (experts["default"], experts["range"]) == (2, "1 <= x <= 16") and "encoders" in experts["description"]
    assert rows["pcgrad"]["options"] == []  # reads the empty model: takes none
    assert rows["unet"]["options"][0] == {"name": "widths", "type": "tuple[int, ...]",
                                          "default": [16, 32, 64, 128, 256], "range": None, "choices": None,
                                          "description": "channels of each encoder block, shallowest first "
                                                         "(16-32-64-128-256)"}


def test_every_first_party_option_has_a_description():
    result = invoke(["plugins", "--json"])
    assert result.exit_code == 0, result.output
    first_party = [row for row in json.loads(result.stdout)["components"] if row["distribution"] == "mtssl"]
    unlisted = [f"{row['kind']} {row['name']}: {row.get('options_error')}" for row in first_party
                if row["options"] is None]
    assert first_party and not unlisted, unlisted
    missing = [f"{row['kind']} {row['name']} {option['name']}" for row in first_party for option in row["options"]
               if not option["description"].strip()]
    assert not missing, "first-party options without a description:\n" + "\n".join(missing)


def test_json_lists_a_third_party_components_options(plugin_factory):
    plugin_factory.install("mtssl-demo-options", {"mtssl_demo_options": OPTIONED_PLUGIN,
                                                  "mtssl_demo_options_impl": OPTIONED_IMPL},
                           {"demo-options": "mtssl_demo_options"})
    rows = listing()
    assert rows["sharpen"]["options"] == [
        {"name": "T", "type": "float", "default": 0.5, "range": "0 < x <= 1", "choices": None,
         "description": "temperature of the sharpened guess"},
        {"name": "target", "type": "choice", "default": "soft", "range": None, "choices": ["hard", "soft"],
         "description": ""},
        {"name": "bank", "type": "int", "required": True, "range": None, "choices": None,
         "description": "labeled embeddings kept"},
    ]
    assert rows["gauge"]["options"] == [{"name": "level", "type": "int", "default": 3, "range": "x >= 0",
                                         "choices": None, "description": ""}]
    # a reference that does not resolve is reported on its row; the listing goes on
    assert rows["missing"]["options"] is None
    assert "could not be loaded from 'mtssl_demo_options_impl:NoSuchClass'" in rows["missing"]["options_error"]


def test_the_model_is_found_through_the_bases_and_by_keyword():
    class Base:
        def __init__(self, name, **options):
            self.settings = read_options(name, options, model=Inner)

    class Child(Base):
        pass

    assert declared_options(Child) is Inner
    assert declared_options(len) is None  # no source to read: declares nothing


class Inner(Options):
    mode: Literal["a", "b"] | None = None
    scale: float = Field(1.0, ge=0)


def read_options(component, options, model):  # what the factory above calls, as in a plugin's module
    return model.model_validate(options)


def test_describe_options_of_an_optional_choice():
    mode, scale = describe_options(Inner)
    assert (mode["type"], mode["default"], mode["choices"]) == ("choice | none", None, ["a", "b"])
    assert (scale["type"], scale["default"], scale["range"]) == ("float", 1.0, "x >= 0")


# -- options declared as a class attribute -----------------------------------------------------------------
class DeclaredOptions(Options):
    threshold: float = Field(0.9, ge=0.0, le=1.0)
    mode: Literal["hard", "soft"] = "hard"


class Declared(SSLStrategy):
    """A strategy with no constructor of its own: the base class reads its options."""

    options_model = DeclaredOptions

    def plan(self):
        return []

    def loss(self, inputs):
        raise NotImplementedError


class DeclaredWeighting(Weighting):
    options_model = Options  # takes none

    def combine(self, losses, step):
        raise NotImplementedError


def test_a_strategy_declared_with_options_model_gets_its_fields_as_attributes():
    strategy = Declared("sharp", threshold=0.5)
    assert (strategy.threshold, strategy.mode) == (0.5, "hard")
    assert strategy.settings == DeclaredOptions(threshold=0.5)
    assert (strategy.name, strategy.options) == ("sharp", {"threshold": 0.5})
    assert declared_options(Declared) is DeclaredOptions  # listed by ``mtssl plugins --json`` too
    with pytest.raises(ValueError, match=r"^strategy 'sharp': option threshold: must satisfy 0\.0 <= x <= 1\.0, "
                                         r"got 2$"):
        Declared("sharp", threshold=2)
    with pytest.raises(ValueError, match=r"^weighting 'flat': unknown option\(s\) scale; known: none$"):
        DeclaredWeighting("flat", scale=1)


def test_without_options_model_the_base_class_reads_nothing():
    class Explicit(Declared):
        options_model = None

    strategy = Explicit("old", anything=1)  # an old-style plugin reads (and checks) its options itself
    assert strategy.options == {"anything": 1} and not hasattr(strategy, "settings")


def test_an_option_that_would_hide_a_method_is_refused():
    class ClashingOptions(Options):
        plan: int = 1

    class Clashing(Declared):
        options_model = ClashingOptions

    with pytest.raises(TypeError, match=r"^strategy 'c': option 'plan' of ClashingOptions would replace "
                                        r"Clashing\.plan; give the option another name$"):
        Clashing("c")
