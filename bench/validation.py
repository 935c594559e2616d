"""The one set of value checks every config section uses: each returns the value normalised or raises a
``ConfigError`` naming the setting (``profile.epochs``, ``unet3d.depth``), the bad value and the fix."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from numbers import Integral, Real
from typing import Any

from bench.errors import ConfigError


def check_int(setting: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int >= ``minimum`` (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < minimum:
        raise ConfigError(f"{setting}={value!r} must be an integer >= {minimum}")
    return int(value)


def check_positive(setting: str, value: Any, *, integer: bool = False) -> Any:
    """``value`` if it is a number (an integer with ``integer``) > 0."""
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok or not value > 0:
        raise ConfigError(f"{setting}={value!r} must be {'a positive integer' if integer else 'a positive number'}")
    return value


def check_number(setting: str, value: Any) -> float:
    """``value`` as a float if it is a number (bools are refused)."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise ConfigError(f"{setting}={value!r} must be a number")
    return float(value)


def check_int_tuple(setting: str, value: Any, minimum: int = 1) -> tuple[int, ...]:
    """A non-empty sequence of ints >= ``minimum`` (YAML lists accepted) as a tuple."""
    shown = tuple(value) if isinstance(value, list) else value
    if isinstance(value, str | bytes) or not isinstance(value, Sequence) or len(value) == 0 or any(
        isinstance(v, bool) or not isinstance(v, Integral) or v < minimum for v in value
    ):
        raise ConfigError(f"{setting}={shown!r} must be a non-empty list of integers >= {minimum}")
    return tuple(int(v) for v in value)


def check_choice(setting: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``."""
    if value not in choices:
        raise ConfigError(f"{setting}={value!r} is unknown", fix=f"use one of {', '.join(choices)}")
    return str(value)


def check_rate(setting: str, value: Any) -> float:
    """A probability in ``[0, 1)`` as a float."""
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"{setting}={value!r} must be a number in [0, 1)")
    return float(value)


def check_fraction(setting: str, value: Any) -> float:
    """A number in ``[0, 1]`` as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(f"{setting}={value!r} must be a number in [0, 1]", fix="0 switches it off")
    return float(value)


def check_flag(setting: str, value: Any) -> bool:
    """``value`` if it is a boolean."""
    if not isinstance(value, bool):
        raise ConfigError(f"{setting}={value!r} must be true or false")
    return value


def check_keys(section: str, given: Iterable[Any], known: Iterable[str]) -> None:
    """ConfigError naming the first key of ``given`` that ``section`` does not define, and the closest known keys
    (``+profile.epoch=5`` -> ``profile.epoch is not a setting (closest: epochs)``)."""
    names = sorted(set(known))
    for key in given:
        if key not in names:
            near = difflib.get_close_matches(str(key), names, n=3, cutoff=0.5)
            where = f"{section}.{key}" if section else str(key)
            raise ConfigError(
                f"{where} is not a setting" + (f" (closest: {', '.join(near)})" if near else ""),
                fix=f"{section or 'the config'} has: {', '.join(names)}",
            )


def section(cfg: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """``cfg[name]`` as a mapping (missing: empty); ConfigError when it is something else."""
    value = cfg.get(name)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name}={value!r} must be a mapping of settings")
    return value
