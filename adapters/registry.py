"""The one architecture registry: name -> (config class, torch builder, TF builder).

Builders are named as ``"module:attribute"`` strings and imported only when a network is built, so the
registry (and everything that reads it: the config translation, ``bench models``, the tests) never
imports a framework. A builder is any callable ``builder(config) -> network``: a ``torch.nn.Module`` for
torch, a channels-last ``keras.Model`` with free spatial dimensions for TF.

A user's own architecture needs no edit here: its model YAML names its builders,

.. code-block:: yaml

    architecture: toynet
    implementation: {torch: "mymodels.toynet_torch:ToyNet", tf: "mymodels.toynet_tf:build"}
    params: {width: 8}

and ``register_from_model_config`` adds it. Without an ``implementation.config`` class its typed config is
made from ``params``: each parameter keeps the type of its YAML default (int, float, str, bool or a list
of ints), and a value of another type is a ConfigError.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from adapters.configs import NetConfig, NeuroNetConfig, UNet3DConfig, VNetConfig, check_int_tuple
from bench.errors import ConfigError

FRAMEWORKS: tuple[str, ...] = ("torch", "tf")
IMPLEMENTATION_KEYS = (*FRAMEWORKS, "config")


@dataclass(frozen=True)
class Architecture:
    """One registered architecture.

    Attributes:
        name: The ``model.architecture`` value.
        config: Its frozen, validated config class (constructor arguments of both networks).
        builders: ``framework -> "module:attribute"`` of ``builder(config) -> network``.
        implementation: What a model YAML said (empty for built-ins); saved with a model so that
            ``adapters.load`` can register it again in another process.
    """

    name: str
    config: type[NetConfig]
    builders: Mapping[str, str]
    implementation: Mapping[str, str] = field(default_factory=dict)

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


def import_attribute(target: str, what: str) -> Any:
    """``"package.module:attribute"`` imported; ConfigError naming ``target`` when it cannot be found."""
    module_name, _, attribute = str(target).partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"{what} {target!r} is not 'module:attribute'", fix="e.g. mymodels.toynet:ToyNet")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise ConfigError(f"{what} {target!r}: module {exc.name!r} not found",
                              fix="put its folder on PYTHONPATH or install its package") from exc
        raise
    try:
        return getattr(module, attribute)
    except AttributeError:
        raise ConfigError(f"{what} {target!r}: {module_name} has no attribute {attribute!r}") from None


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
    return register(architecture_from_implementation(name, implementation, model.get("params") or {}))


def architecture_from_implementation(
    name: str, implementation: Mapping[str, Any], params: Mapping[str, Any]
) -> Architecture:
    """An Architecture from a model YAML's ``implementation`` block and its default ``params``."""
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
        config = config_from_defaults(name, params)
    saved = {k: str(v) for k, v in implementation.items() if v}
    return Architecture(name, config, builders, saved)


_TYPES: dict[type, str] = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}


def config_from_defaults(name: str, defaults: Mapping[str, Any]) -> type[NetConfig]:
    """A frozen NetConfig subclass whose fields are ``defaults`` and whose values keep their default's type.

    Lists become tuples of ints. The config's ``architecture`` is ``name`` (so messages say ``name.field``).
    """
    fields = []
    for key, value in defaults.items():
        value = tuple(value) if isinstance(value, list) else value
        if not isinstance(value, tuple | bool | int | float | str) or (
            isinstance(value, tuple) and not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise ConfigError(f"model.params.{key}={value!r}: a default must be a number, string, boolean or "
                              "list of integers", fix="or name a config class in implementation.config")
        fields.append((str(key), type(value), dataclasses.field(default=value)))

    def validate(self: NetConfig) -> dict[str, Any]:
        out = {}
        for spec in dataclasses.fields(self):
            out[spec.name] = _typed(self.setting(spec.name), getattr(self, spec.name), spec.type)
        return out

    cls = dataclasses.make_dataclass(
        f"{name}_config", fields, bases=(NetConfig,), frozen=True,
        namespace={"architecture": name, "validate": validate,
                   "__doc__": f"Config of {name}, typed from its model YAML's params."},
    )
    return cls


def _typed(setting: str, value: Any, kind: Any) -> Any:
    if kind is tuple:
        return check_int_tuple(setting, value, minimum=0)
    ok = isinstance(value, kind) and (kind is bool or not isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not ok:
        raise ConfigError(f"{setting}={value!r} must be {_TYPES[kind]} (as its default)")
    return value
