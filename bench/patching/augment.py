"""Data augmentation of training batches, in numpy (so torch and TF train on identical batches for a seed).

``augment_batch(batch, spec, rng)`` returns a new ``PatchBatch``; per patch, in this order:
    flips: along axis a (x, y, z) with probability ``flip_prob[a]``, image and label alike;
    scale: ``x * s`` with ``s ~ U(scale_range)``, probability ``scale_prob`` (multiplicative jitter);
    shift: ``x + d`` with ``d ~ U(shift_range)`` (intensity units after preprocessing), probability ``shift_prob``;
    gamma: per channel ``lo + (hi - lo) * ((x - lo) / (hi - lo)) ** g`` with the patch's min ``lo`` and max ``hi``
        and ``g ~ U(gamma_range)``, probability ``gamma_prob`` (the range is kept; a constant channel is left);
    noise: ``x + N(0, sigma²)`` voxel-wise with ``sigma ~ U(noise_std)``, probability ``noise_prob``.
Every random number of a batch is drawn in a fixed order, whatever is switched on: ``(B, 3)`` flip draws, then
for scale, shift, gamma and noise ``B`` decisions and ``B`` values each, then the noise fields of the patches
that get noise (in batch order). The sampler draws them from ``default_rng([seed, epoch, AUGMENT_STREAM])``,
a stream apart from the patch locations, so switching augmentation on moves no patch.

Example:
    >>> spec = AugmentSpec(name="flips", flip_prob=(0.5, 0.5, 0.5))
    >>> out = augment_batch(batch, spec, np.random.default_rng(0))  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np

from bench.contract import PatchBatch
from bench.errors import ConfigError

AUGMENT_STREAM = 1
"""Third word of the augmentation generator's seed (``[seed, epoch, AUGMENT_STREAM]``)."""
INTENSITY = ("scale", "shift", "gamma", "noise")
"""The intensity transforms, in the order they are applied (each has ``<name>_prob`` and a range)."""


@dataclass(frozen=True)
class AugmentSpec:
    """What to augment (``name`` labels the preset: ``none``, ``flips``, ``default``; every probability 0 = off).

    Attributes:
        flip_prob: Probability of a flip along x, y and z.
        scale_prob, scale_range: Multiplicative intensity jitter (factor range, > 0).
        shift_prob, shift_range: Additive intensity jitter (intensity units).
        gamma_prob, gamma_range: Gamma on the patch's min-max range (exponent range, > 0).
        noise_prob, noise_std: Gaussian noise; its standard deviation is drawn from ``noise_std``.
    """

    name: str = "none"
    flip_prob: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale_prob: float = 0.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    shift_prob: float = 0.0
    shift_range: tuple[float, float] = (-0.1, 0.1)
    gamma_prob: float = 0.0
    gamma_range: tuple[float, float] = (0.7, 1.5)
    noise_prob: float = 0.0
    noise_std: tuple[float, float] = (0.0, 0.1)

    def __post_init__(self) -> None:
        flips = tuple(self.flip_prob) if isinstance(self.flip_prob, list | tuple) else ()
        if len(flips) != 3:
            raise ConfigError(f"augmentation.flip_prob={self.flip_prob!r} must be three probabilities (x, y, z)")
        object.__setattr__(self, "flip_prob", tuple(_probability(f"flip_prob[{i}]", p) for i, p in enumerate(flips)))
        for name in INTENSITY:
            _probability(f"{name}_prob", getattr(self, f"{name}_prob"))
        for name, positive in (("scale_range", True), ("shift_range", False), ("gamma_range", True),
                               ("noise_std", False)):
            object.__setattr__(self, name, _range(name, getattr(self, name), positive, nonnegative=name == "noise_std"))

    @property
    def enabled(self) -> bool:
        """Whether any transform can happen."""
        return any(p > 0 for p in self.flip_prob) or any(getattr(self, f"{n}_prob") > 0 for n in INTENSITY)

    def record(self) -> dict[str, Any]:
        """The preset's name and the settings of the transforms that are on (a run's params and hash)."""
        out: dict[str, Any] = {"name": self.name}
        if any(p > 0 for p in self.flip_prob):
            out["flip_prob"] = list(self.flip_prob)
        for name in INTENSITY:
            if getattr(self, f"{name}_prob") > 0:
                value_name = "noise_std" if name == "noise" else f"{name}_range"
                out[f"{name}_prob"], out[value_name] = getattr(self, f"{name}_prob"), list(getattr(self, value_name))
        return out

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> AugmentSpec:
        """From the ``augmentation`` config group (absent: none); ConfigError naming an unknown key."""
        values = dict(cfg or {})
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"augmentation has unknown key {', '.join(map(repr, unknown))}",
                              fix=f"use some of {', '.join(known)}")
        values["name"] = str(values.get("name", "none"))
        normalised: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
        return cls(**normalised)


def _probability(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 <= float(value) <= 1.0:
        raise ConfigError(f"augmentation.{name}={value!r} must be a probability in [0, 1]")
    return float(value)


def _range(name: str, value: Any, positive: bool, nonnegative: bool = False) -> tuple[float, float]:
    items = tuple(value) if isinstance(value, list | tuple) else ()
    ok = len(items) == 2 and all(isinstance(v, Real) and not isinstance(v, bool) for v in items)
    if ok:
        lo, hi = float(items[0]), float(items[1])
        ok = lo <= hi and (not positive or lo > 0) and (not nonnegative or lo >= 0)
    if not ok:
        need = "> 0" if positive else ">= 0" if nonnegative else "numbers"
        raise ConfigError(f"augmentation.{name}={value!r} must be [low, high] with low <= high ({need})",
                          fix=f"e.g. augmentation.{name}=[{'0.9, 1.1' if positive else '0.0, 0.1'}]")
    return lo, hi


def augment_batch(batch: PatchBatch, spec: AugmentSpec, rng: np.random.Generator) -> PatchBatch:
    """The batch augmented as ``spec`` says, drawing from ``rng`` (see the module docstring); a new batch."""
    image = np.array(batch.image, dtype=np.float32, copy=True)
    label = np.array(batch.label, copy=True)
    count = image.shape[0]
    flips = rng.random((count, 3)) < np.asarray(spec.flip_prob)
    draws: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name in INTENSITY:
        on = np.asarray(rng.random(count) < getattr(spec, f"{name}_prob"))
        low, high = spec.noise_std if name == "noise" else getattr(spec, f"{name}_range")
        draws[name] = (on, np.asarray(rng.uniform(low, high, count)))
    for b in range(count):
        axes = tuple(int(a) for a in np.flatnonzero(flips[b]))
        if axes:
            label[b] = np.flip(label[b], axis=axes).copy()
            image[b] = np.flip(image[b], axis=tuple(a + 1 for a in axes)).copy()
        image[b] = _intensity(image[b], {name: float(value[b]) for name, (on, value) in draws.items() if on[b]}, rng)
    return PatchBatch(image=image, label=label)


def _intensity(patch: np.ndarray, values: Mapping[str, float], rng: np.random.Generator) -> np.ndarray:
    """One ``[C, X, Y, Z]`` patch with the switched-on intensity transforms (``values``: name -> drawn value)."""
    if not values:
        return patch
    out = patch.astype(np.float64)
    if "scale" in values:
        out *= values["scale"]
    if "shift" in values:
        out += values["shift"]
    if "gamma" in values:
        for c in range(out.shape[0]):
            lo, hi = float(out[c].min()), float(out[c].max())
            if hi > lo:
                out[c] = lo + (hi - lo) * ((out[c] - lo) / (hi - lo)) ** values["gamma"]
    if "noise" in values:
        out += rng.standard_normal(out.shape) * values["noise"]
    return out.astype(np.float32)
