"""The one architecture registry: name -> (config class, torch builder, TF builder).

Builders are named as ``"module:attribute"`` strings and imported only when a network is built, so the
registry (and everything that reads it: the config translation, ``bench models``, the tests) never
imports a framework. A builder is any callable ``builder(config) -> network``: a ``torch.nn.Module`` for
torch, a channels-last ``keras.Model`` with free spatial dimensions for TF.

A user's own architecture needs no edit here: its model YAML names its builders,

.. code-block:: yaml

    architecture: toynet
    implementation:
      torch: mymodels.toynet_torch:ToyNet
      tf: mymodels.toynet_tf:build
      params: {width: int}
    params: {width: 8}

and ``register_from_model_config`` adds it. Its typed config is either a ``NetConfig`` subclass named by
``implementation.config``, or made from ``implementation.params``, which declares each parameter's type
(``{width: int}``; types: int, float, str, bool, list[int]): a missing parameter, an unknown one or a
value of another type is a ConfigError naming it.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from bench.errors import ConfigError
from bench.networks.configs import NetConfig, NeuroNetConfig, UNet3DConfig, VNetConfig, check_int_tuple
from bench.networks.imports import import_callable

FRAMEWORKS: tuple[str, ...] = ("torch", "tf")
IMPLEMENTATION_KEYS = (*FRAMEWORKS, "config", "params")


@dataclass(frozen=True)
class Architecture:
    """One registered architecture.

    Attributes:
        name: The ``model.architecture`` value.
        config: Its frozen, validated config class (constructor arguments of both networks).
        builders: ``framework -> "module:attribute"`` of ``builder(config) -> network``.
        implementation: What a model YAML said (empty for built-ins); saved with a model so that
            ``frameworks.load`` can register it again in another process.
    """

    name: str
    config: type[NetConfig]
    builders: Mapping[str, str]
    implementation: Mapping[str, Any] = field(default_factory=dict)

    def make_config(self, params: Mapping[str, Any]) -> NetConfig:
        """The validated config from a parameter dict (ConfigError naming a bad name or value)."""
        return self.config.from_params(params)

    def builder(self, framework: str) -> Callable[[NetConfig], Any]:
        """The framework's builder (imports its module, and with it the framework)."""
        if framework not in self.builders:
            raise ConfigError(
                f"architecture {self.name!r} has no {framework} implementation",
                fix=f"use framework={' or '.join(self.builders)}, or add implementation.{framework} to its YAML",
            )
        return import_attribute(self.builders[framework], f"{self.name} {framework} builder")


BUILT_IN: tuple[Architecture, ...] = (
    Architecture("unet3d", UNet3DConfig,
                 {"torch": "adapters.torch.nets.unet3d:UNet3D", "tf": "adapters.tf.nets.unet3d:build_unet3d"}),
    Architecture("vnet", VNetConfig,
                 {"torch": "adapters.torch.nets.vnet:VNet", "tf": "adapters.tf.nets.vnet:build_vnet"}),
    Architecture("neuronet", NeuroNetConfig,
                 {"torch": "adapters.torch.nets.neuronet:NeuroNet", "tf": "adapters.tf.nets.neuronet:build_neuronet"}),
)
_REGISTRY: dict[str, Architecture] = {entry.name: entry for entry in BUILT_IN}


def names() -> tuple[str, ...]:
    """Every registered architecture, built-ins first."""
    return tuple(_REGISTRY)


def lookup(name: str) -> Architecture:
    """The registered architecture ``name``; ConfigError naming it and the known ones otherwise."""
    if name not in _REGISTRY:
        raise ConfigError(
            f"model.architecture={name!r} is unknown",
            fix=f"use one of {', '.join(_REGISTRY)}, or name its builders in the model YAML's implementation "
            "block (README: Adding a model)",
        )
    return _REGISTRY[name]


def _split_target(target: str, what: str) -> tuple[str, str]:
    """``"package.module:attribute"`` as (module, attribute); ConfigError naming ``what`` otherwise."""
    module_name, _, attribute = str(target).partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{what}={target!r} is not 'module:attribute'", fix="e.g. mymodels.toynet:ToyNet")
    return module_name, attribute


def import_attribute(target: str, what: str) -> Any:
    """``"package.module:attribute"`` imported; ConfigError naming ``target`` when it cannot be found."""
    _split_target(target, what)
    return import_callable(target, what)


def register(entry: Architecture) -> Architecture:
    """Add ``entry``; the same builders again return the known entry, other builders under a used name are an error."""
    known = _REGISTRY.get(entry.name)
    if known is not None and (known.builders, known.implementation) == (entry.builders, entry.implementation):
        return known
    if known is not None:
        raise ConfigError(
            f"model architecture={entry.name!r} is already registered with other builders "
            f"({dict(known.builders)})", fix="give your architecture another name",
        )
    _REGISTRY[entry.name] = entry
    return entry


def register_from_model_config(model: Mapping[str, Any]) -> Architecture:
    """The architecture a model YAML describes, registered from its ``implementation`` block if it has one.

    Raises:
        ConfigError: Unknown architecture without an implementation block, a malformed block, or an
            implementation for a built-in name.
    """
    name = model.get("architecture")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"model.architecture={name!r} must be a non-empty name")
    implementation = model.get("implementation")
    if not implementation:
        return lookup(name)
    return register(architecture_from_implementation(name, implementation))


def architecture_from_implementation(name: str, implementation: Mapping[str, Any]) -> Architecture:
    """An Architecture from a model YAML's ``implementation`` block (builders, and a config class or types)."""
    if not isinstance(implementation, Mapping):
        raise ConfigError(f"model.implementation={implementation!r} must be a mapping",
                          fix="e.g. {torch: 'mymodels.net:Net', tf: 'mymodels.net_tf:build'}")
    unknown = sorted(set(implementation) - set(IMPLEMENTATION_KEYS))
    if unknown:
        raise ConfigError(f"model.implementation has unknown key {', '.join(map(repr, unknown))}",
                          fix=f"use some of {', '.join(IMPLEMENTATION_KEYS)}")
    if name in {entry.name for entry in BUILT_IN}:
        raise ConfigError(f"model.implementation given for the built-in architecture {name!r}",
                          fix="give your architecture another name")
    builders = {fw: str(implementation[fw]) for fw in FRAMEWORKS if implementation.get(fw)}
    if not builders:
        raise ConfigError(f"model.implementation of {name!r} names no builder", fix="add torch: and/or tf:")
    if implementation.get("config"):
        config = import_attribute(str(implementation["config"]), f"{name} config")
        if not (isinstance(config, type) and issubclass(config, NetConfig)):
            raise ConfigError(f"{name} config {implementation['config']!r} is not a NetConfig subclass")
    else:
        config = config_from_signature(name, implementation.get("params"))
    for framework, target in builders.items():
        _check_module(target, f"model.implementation.{framework}")
    saved = {k: v if k == "params" else str(v) for k, v in implementation.items() if v}
    return Architecture(name, config, builders, saved)


def _check_module(target: str, what: str) -> None:
    """ConfigError unless the module of ``"module:attribute"`` can be found (it is not imported: a builder's
    module imports its framework, and config errors come before that)."""
    module_name, _ = _split_target(target, what)
    try:
        found = importlib.util.find_spec(module_name)
    except ModuleNotFoundError:  # a parent package is missing
        found = None
    if found is None:
        raise ConfigError(f"{what}={target!r}: module {module_name!r} not found",
                          fix="put its folder on PYTHONPATH or install its package")


PARAM_TYPES: dict[str, Any] = {"int": int, "float": float, "str": str, "bool": bool, "list[int]": tuple}
"""The type names ``implementation.params`` may use."""
_TYPE_WORDS: dict[Any, str] = {int: "an integer", float: "a number", str: "a string", bool: "a boolean"}


def config_from_signature(name: str, signature: Any) -> type[NetConfig]:
    """A frozen NetConfig subclass with one required field per ``{parameter: type name}`` of ``signature``.

    Values must have the declared type (``float`` also takes integers; ``list[int]`` a list of integers);
    the config's ``architecture`` is ``name``, so messages say ``name.parameter=value``.
    """
    if not isinstance(signature, Mapping) or not signature:
        raise ConfigError(f"model.implementation.params={signature!r} must map each parameter to its type",
                          fix=f"e.g. {{width: int}}; types: {', '.join(PARAM_TYPES)}")
    fields = []
    for key, type_name in signature.items():
        if type_name not in PARAM_TYPES:
            raise ConfigError(f"model.implementation.params.{key}={type_name!r} is not a known type",
                              fix=f"use one of {', '.join(PARAM_TYPES)}")
        fields.append((str(key), PARAM_TYPES[type_name]))

    def validate(self: NetConfig) -> dict[str, Any]:
        return {f.name: _typed(self.setting(f.name), getattr(self, f.name), f.type) for f in dataclasses.fields(self)}

    return dataclasses.make_dataclass(
        f"{name}_config", fields, bases=(NetConfig,), frozen=True,
        namespace={"architecture": name, "validate": validate,
                   "__doc__": f"Config of {name}, typed by its model YAML's implementation.params."},
    )


def _typed(setting: str, value: Any, kind: Any) -> Any:
    """``value`` checked against a declared type (ConfigError naming ``setting`` otherwise)."""
    if kind is tuple:
        return check_int_tuple(setting, value, minimum=0)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise ConfigError(f"{setting}={value!r} must be {_TYPE_WORDS[kind]}")
    return value
