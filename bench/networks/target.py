"""Networks named by their import path: a model YAML's ``torch:`` / ``tf:`` block in Hydra's ``_target_`` shape.

.. code-block:: yaml

    architecture: monai_basicunet          # the name in run names, MLflow and reports
    channels: {in: in_channels, out: out_channels}   # which keywords get the data's channels and classes
    torch:
      _target_: monai.networks.nets.BasicUNet
      spatial_dims: 3
      features: [16, 16, 32, 64, 128, 16]

The callable is resolved and called as ``hydra.utils.instantiate`` would: keyword arguments of any YAML type,
nested ``{_target_: ...}`` mappings instantiated first, ``_args_`` for positional arguments and
``_partial_: true`` for a ``functools.partial``. The harness fills the ``channels`` keywords (input channels,
classes) itself. Whatever the callable returns must be a ``torch.nn.Module`` taking ``[B, C, X, Y, Z]`` (torch)
or a channels-last ``keras.Model`` with free spatial dimensions (TF), and give one logit per class.

Nothing here imports a framework: the callable's module is imported when the network is built.
"""

from __future__ import annotations

import functools
import importlib.util
import inspect
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

from bench.errors import ConfigError
from bench.networks.configs import NetConfig
from bench.networks.imports import closest, first_line, import_callable
from bench.validation import check_int

TARGET_KEY = "_target_"
SPECIAL_KEYS = ("_args_", "_partial_")
CHANNEL_ROLES = ("in", "out")
BUILDER = "bench.networks.target:instantiate_network"
"""The builder of every ``_target_`` network (``registry.Architecture.builders``): it calls the target."""


def _json_able(value: Any, setting: str) -> Any:
    """``value`` as plain JSON values (tuples as lists); ConfigError naming ``setting`` for anything else."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError):
        raise ConfigError(f"{setting}={value!r} is not a plain YAML value (number, string, list, mapping)") from None


@dataclass(frozen=True)
class TargetConfig(NetConfig):
    """One framework's ``_target_`` network: the callable, its keyword arguments, and where channels go.

    Attributes:
        name: The model's ``architecture`` (its name in runs and reports).
        framework: ``torch`` or ``tf``: whose block this is.
        target: Dotted import path of the callable (``monai.networks.nets.UNet``; ``module:attribute`` also works).
        kwargs: Its keyword arguments as given (overrides applied), without the channel keywords.
        in_key, out_key: The keywords that receive ``in_channels`` and ``num_classes``.
        in_channels, num_classes: Filled from the data.
    """

    architecture: ClassVar[str] = "target"
    name: str = ""
    framework: str = "torch"
    target: str = ""
    kwargs: Mapping[str, Any] | None = None
    in_key: str = "in_channels"
    out_key: str = "out_channels"
    in_channels: int = 1
    num_classes: int = 4

    def setting(self, name: str) -> str:
        return f"model.{self.framework}.{name}"

    def validate(self) -> dict[str, Any]:
        if not isinstance(self.target, str) or not self.target.strip():
            raise ConfigError(f"{self.setting(TARGET_KEY)}={self.target!r} must be a dotted import path",
                              fix="e.g. _target_: monai.networks.nets.BasicUNet")
        kwargs = dict(self.kwargs or {})
        for key in (self.in_key, self.out_key):
            if key in kwargs:
                raise ConfigError(
                    f"{self.setting(key)}={kwargs[key]!r} is set by the harness from the data "
                    f"({'input channels' if key == self.in_key else 'classes'})",
                    fix=f"remove {key} from the model's {self.framework} block",
                )
        if self.in_key == self.out_key:
            raise ConfigError(f"model.channels: in and out both name the keyword {self.in_key!r}")
        return {
            "target": self.target.strip(),
            "kwargs": _json_able(kwargs, f"model.{self.framework}"),
            "in_channels": check_int(f"{self.name}.in_channels", self.in_channels),
            "num_classes": check_int(f"{self.name}.num_classes", self.num_classes, minimum=2),
        }

    @classmethod
    def from_block(cls, name: str, framework: str, block: Mapping[str, Any], channels: Any,
                   overrides: Mapping[str, Any] | None = None, *, in_channels: int = 1, num_classes: int = 4) -> Self:
        """The config of a model YAML's ``framework`` block (``_target_`` and keyword arguments), with
        ``overrides`` (the profile's ``model_overrides``) applied over its keywords, and the data's input
        channels and classes (the keywords ``model.channels`` names are the data's, never the YAML's)."""
        if not isinstance(block, Mapping) or not block.get(TARGET_KEY):
            raise ConfigError(f"model.{framework} of {name!r} has no {TARGET_KEY}",
                              fix=f"e.g. model.{framework}: {{_target_: monai.networks.nets.UNet, ...}}")
        in_key, out_key = channel_keys(name, channels)
        kwargs = {str(k): v for k, v in block.items() if k != TARGET_KEY}
        kwargs.update(overrides or {})
        _check_module(str(block[TARGET_KEY]), f"model.{framework}.{TARGET_KEY}")
        return cls(name=name, framework=framework, target=str(block[TARGET_KEY]), kwargs=kwargs,
                   in_key=in_key, out_key=out_key, in_channels=in_channels, num_classes=num_classes)

    def to_params(self) -> dict[str, Any]:
        return {"name": self.name, "framework": self.framework, "target": self.target,
                "kwargs": dict(self.kwargs or {}), "in_key": self.in_key, "out_key": self.out_key,
                "in_channels": self.in_channels, "num_classes": self.num_classes}

    def arguments(self) -> dict[str, Any]:
        """Every keyword the callable receives: the YAML's (overrides applied) and the channels."""
        return {**dict(self.kwargs or {}), self.in_key: self.in_channels, self.out_key: self.num_classes}

    def record(self) -> dict[str, Any]:
        """What a run records of this network: the callable and every argument it was called with."""
        return {TARGET_KEY: self.target, **self.arguments()}

    def divisor_reason(self) -> str:
        return "the network"


def channel_keys(name: str, channels: Any) -> tuple[str, str]:
    """``model.channels``: ``{in: <keyword>, out: <keyword>}``; ConfigError naming what is missing."""
    example = "channels: {in: in_channels, out: out_channels}"
    if not isinstance(channels, Mapping):
        raise ConfigError(f"model {name!r} does not say which keywords receive the input channels and the classes "
                          f"(model.channels={channels!r})", fix=f"add `{example}` to its YAML")
    unknown = sorted(set(map(str, channels)) - set(CHANNEL_ROLES))
    if unknown:
        raise ConfigError(f"model.channels has unknown key {', '.join(map(repr, unknown))}", fix=example)
    keys = []
    for role in CHANNEL_ROLES:
        key = channels.get(role)
        if not isinstance(key, str) or not key.isidentifier():
            raise ConfigError(f"model.channels.{role}={key!r} must name a keyword of the network's callable",
                              fix=example)
        keys.append(key)
    return keys[0], keys[1]


def _check_module(target: str, setting: str) -> None:
    """ConfigError unless the top-level package of ``target`` is installed (found without importing it: a
    network's package imports its framework, and config errors come before that)."""
    top = target.replace(":", ".").split(".")[0]
    if not top or importlib.util.find_spec(top) is None:
        raise ConfigError(f"{setting}={target!r}: no module named {top!r}",
                          fix="install its package or put its folder on PYTHONPATH")


def check_keywords(factory: Callable[..., Any], arguments: Mapping[str, Any], setting: str) -> None:
    """ConfigError naming each keyword ``factory`` does not take (and the closest it does), or a required one
    that is missing; nothing to check when it takes ``**kwargs`` or has no readable signature."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return
    parameters = signature.parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = [n for n, p in parameters.items()
                if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)]
    for key in arguments:
        if key not in accepted:
            raise ConfigError(f"{setting}.{key}: {getattr(factory, '__qualname__', factory)} has no keyword "
                              f"{key!r}{closest(key, accepted)}", fix=f"its keywords: {', '.join(accepted)}")
    missing = [n for n in accepted if parameters[n].default is inspect.Parameter.empty and n not in arguments
               and n != "self"]
    if missing:
        raise ConfigError(f"{setting}: {getattr(factory, '__qualname__', factory)} needs "
                          f"{', '.join(map(repr, missing))}", fix=f"set {setting}.{missing[0]}=...")


def instantiate(node: Any, setting: str) -> Any:
    """A YAML value with every ``{_target_: ...}`` mapping in it called, depth first (Hydra's rule)."""
    if isinstance(node, list):
        return [instantiate(item, f"{setting}[{i}]") for i, item in enumerate(node)]
    if not isinstance(node, Mapping):
        return node
    if TARGET_KEY not in node:
        return {k: instantiate(v, f"{setting}.{k}") for k, v in node.items()}
    factory = import_callable(str(node[TARGET_KEY]), f"{setting}.{TARGET_KEY}")
    args = [instantiate(a, f"{setting}._args_") for a in node.get("_args_") or []]
    kwargs = {str(k): instantiate(v, f"{setting}.{k}") for k, v in node.items()
              if k != TARGET_KEY and k not in SPECIAL_KEYS}
    if not args:
        check_keywords(factory, kwargs, setting)
    if node.get("_partial_"):
        return functools.partial(factory, *args, **kwargs)
    try:
        return factory(*args, **kwargs)
    except Exception as exc:
        raise ConfigError(f"{setting}: {node[TARGET_KEY]}(...) raised {type(exc).__name__}: {first_line(exc)}",
                          fix="check its arguments") from None


def instantiate_network(config: NetConfig) -> Any:
    """The network a ``TargetConfig`` names, built with its arguments and the data's channels."""
    if not isinstance(config, TargetConfig):
        raise ConfigError(f"{type(config).__name__} is not a _target_ network config")
    return instantiate({TARGET_KEY: config.target, **config.arguments()}, f"model.{config.framework}")
