"""The base class of pre-processing steps and the helpers their settings share."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from bench.errors import ConfigError
from bench.io import Volume
from bench.preprocess.prepared import PreparedCase
from bench.types import FloatArray, Spacing


@dataclass
class PreprocessStep:
    """Base class: a per-case intensity step that learns nothing and keeps the grid."""

    name: ClassVar[str] = ""
    geometric: ClassVar[bool] = False
    stateful: ClassVar[bool] = False

    def fit(self, cases: Sequence[PreparedCase]) -> None:
        """Learn from the training cases (no-op unless ``stateful``)."""

    def apply(self, case: PreparedCase) -> PreparedCase:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The step's configuration as plain JSON values."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in fields(self) if f.init}

    def state(self) -> dict[str, Any]:
        """What ``fit`` learnt (JSON-able); ``{}`` for steps without state."""
        return {}

    def state_arrays(self) -> dict[str, npt.NDArray[Any]]:
        """Arrays that ``fit`` learnt beyond ``state()`` (saved with a model as ``.npy``); ``{}`` for most steps."""
        return {}

    def restore(self, state: dict[str, Any], arrays: dict[str, npt.NDArray[Any]]) -> None:
        """Become fitted again from ``state()`` and ``state_arrays()`` saved earlier (no-op without state).

        Raises:
            DataError: The saved state does not fit this step.
        """
        if self.stateful:
            raise NotImplementedError(f"{type(self).__name__} cannot restore its fitted state")

    def output_grid(self, grid: Volume) -> Volume:
        """The grid this step produces from ``grid`` (geometric steps override)."""
        return grid

    def invert_probabilities(self, probs: FloatArray, before: PreparedCase | Volume) -> FloatArray:
        """Probabilities ``[K, X, Y, Z]`` on this step's output grid, back on its input grid."""
        return probs

    def _config_error(self, setting: str, value: Any, expected: str) -> ConfigError:
        return ConfigError(f"preprocess step {self.name!r}: {setting}={value!r} is invalid; expected {expected}")


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def float_triple(step: PreprocessStep, setting: str, value: Any) -> Spacing:
    """``value`` as three positive finite floats (a spacing in mm), or the step's ConfigError naming ``setting``."""
    try:
        triple = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise step._config_error(setting, value, "three positive numbers (mm)") from None
    if len(triple) != 3 or not all(math.isfinite(v) and v > 0 for v in triple):
        raise step._config_error(setting, value, "three positive numbers (mm)")
    return triple[0], triple[1], triple[2]
