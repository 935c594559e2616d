"""Pre-processing pipeline (paper §4.1): fit on training cases, apply to any case, invert to the native grid.

A :class:`Pipeline` is a sequence of steps from ``bench.preprocess.steps`` (spacing normalisation,
histogram matching, CLAHE, standardisation), built from config dicts with :meth:`Pipeline.from_spec`
or by preset name (``PRESETS``, mirroring ``conf/preprocess/*.yaml``). :class:`PreprocessCache` stores
the output of a fitted pipeline per case on disk, keyed by input content, pipeline params and fitted state.

Example:
    >>> pipeline = Pipeline.from_spec([{"name": "histmatch", "match_points": 7}, {"name": "standardise"}])
    >>> pipeline.fit(cohort.split("train"))                      # doctest: +SKIP
    >>> prepared = PreprocessCache("runs/cache/preprocess").get_or_compute(pipeline, case)  # doctest: +SKIP
    >>> probs_native = pipeline.invert_probabilities(probs, prepared)  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import re
import warnings
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from bench.data.cohort import Case
from bench.errors import ConfigError, DataError
from bench.io import Volume, write_atomic
from bench.preprocess.base import PreprocessStep
from bench.preprocess.clahe import Clahe, clahe_kernel_size, skimage_clip_limit
from bench.preprocess.intensity import HistogramMatching, Standardisation
from bench.preprocess.prepared import MASK_DEFINITION_VERSION, PreparedCase, array_sha256, brain_mask, prepare
from bench.preprocess.spacing import SpacingNormalisation
from bench.preprocess.steps import STEP_TYPES
from bench.types import FloatArray

__all__ = [
    "PRESETS",
    "STEP_TYPES",
    "Clahe",
    "HistogramMatching",
    "Pipeline",
    "PreparedCase",
    "PreprocessCache",
    "PreprocessStep",
    "SpacingNormalisation",
    "Standardisation",
    "brain_mask",
    "clahe_kernel_size",
    "file_sha256",
    "prepare",
    "skimage_clip_limit",
]

_HISTMATCH: dict[str, Any] = {"name": "histmatch", "match_points": 7, "levels": 256, "threshold_at_mean": True}
PRESETS: dict[str, tuple[dict[str, Any], ...]] = {
    "raw": ({"name": "standardise"},),
    "histmatch": (_HISTMATCH, {"name": "standardise"}),
    "clahe": (_HISTMATCH, {"name": "clahe", "axis": 2, "tile_grid": [8, 8], "clip_limit": 2.0}, {"name": "standardise"}),
    "spacing": ({"name": "spacing", "target_spacing_mm": [1.0, 1.0, 1.0]}, _HISTMATCH, {"name": "standardise"}),
}
"""Named step lists used by the experiment configs (same as ``conf/preprocess/<name>.yaml``).

``raw`` = standardise (Table 1 "Raw"); ``histmatch`` = histogram matching then standardise (Table 1
"Pre-processed"); ``clahe`` = histogram matching, CLAHE, standardise (CLAHE's output is already on a
common [0, 1] scale, histogram matching first keeps its input comparable across subjects; the paper
does not say how it combined them); ``spacing`` = 1 mm isotropic resampling, then as ``histmatch``.
"""


class Pipeline:
    """An ordered list of pre-processing steps.

    Args:
        steps: The steps, applied in order.
        name: A label for logs (e.g. the preset name).
    """

    def __init__(self, steps: Sequence[PreprocessStep], name: str | None = None) -> None:
        self.steps: tuple[PreprocessStep, ...] = tuple(steps)
        self.name = name
        self._channel_steps: list[tuple[PreprocessStep, ...]] = [self.steps]

    # ---------------------------------------------------------------- channels
    @property
    def num_channels(self) -> int:
        """Input channels the pipeline is set up for (1 until it is fitted on, or set to, more)."""
        return len(self._channel_steps)

    def set_channels(self, count: int) -> None:
        """Give every input channel its own copy of the steps (each fits its own state, e.g. its own histogram
        reference); channel 0 keeps ``steps``. Copies are made of the unfitted steps' parameters."""
        if count < 1:
            raise ValueError(f"a pipeline needs at least one channel, got {count}")
        while len(self._channel_steps) < count:
            self._channel_steps.append(tuple(_build_step(i, {"name": s.name, **s.params()})
                                             for i, s in enumerate(self.steps)))
        del self._channel_steps[count:]

    def channel_steps(self, channel: int) -> tuple[PreprocessStep, ...]:
        """The steps of input channel ``channel`` (``steps`` for channel 0)."""
        return self._channel_steps[channel]

    def __repr__(self) -> str:
        return f"Pipeline({[s.name for s in self.steps]}, name={self.name!r})"

    # ---------------------------------------------------------------- building
    @classmethod
    def from_spec(
        cls, spec: Sequence[Mapping[str, Any]] | Mapping[str, Any], name: str | None = None
    ) -> Pipeline:
        """Build from plain dicts like ``{"name": "histmatch", "match_points": 7}``.

        ``spec`` is the list of step dicts, or a mapping with ``steps`` (and optionally ``name``), as in
        ``conf/preprocess/*.yaml``.

        Raises:
            ConfigError: Unknown step name or parameter, or a bad parameter value.
        """
        if isinstance(spec, Mapping):
            name = name if name is not None else spec.get("name")
            spec = spec.get("steps") or ()
        if isinstance(spec, str | bytes) or not isinstance(spec, Sequence):
            raise ConfigError(f"preprocess.steps={spec!r} is not a list of step mappings")
        return cls([_build_step(i, entry) for i, entry in enumerate(spec)], name=name)

    @classmethod
    def preset(cls, name: str) -> Pipeline:
        """One of ``PRESETS`` by name."""
        if name not in PRESETS:
            raise ConfigError(f"unknown preprocess preset {name!r}; known: {', '.join(PRESETS)}")
        return cls.from_spec(PRESETS[name], name=name)

    # ---------------------------------------------------------------- fitting and applying
    def fit(self, cases: Sequence[PreparedCase | Case], cache: PreprocessCache | None = None) -> None:
        """Fit each stateful step on the training cases as transformed by the steps before it.

        Only cases with ``split == "train"`` are used, whatever else is passed. Cases are brought only as
        far as the last stateful step needs them; with ``cache`` those intermediate results are cached.

        Raises:
            ConfigError: There is no training case.
        """
        train = [c for c in cases if c.split == "train"]
        if not train:
            splits = sorted({c.split for c in cases})
            raise ConfigError(f"no training case to fit the preprocessing pipeline on (splits given: {splits})")
        counts = sorted({c.num_channels for c in train})
        if len(counts) > 1:
            raise ConfigError(f"training cases have different numbers of input channels: {counts}")
        self.set_channels(counts[0])
        for index, step in enumerate(self.steps):
            if step.stateful:
                inputs = self._inputs_of(index, train, cache)
                for channel in range(self.num_channels):
                    self._channel_steps[channel][index].fit([c.channel(channel) for c in inputs])

    def _inputs_of(self, index: int, train: Sequence[PreparedCase | Case], cache: PreprocessCache | None) -> list[PreparedCase]:
        prefix = Pipeline(self.steps[:index], name=f"{self.name}[:{index}]")
        prefix._channel_steps = [steps[:index] for steps in self._channel_steps]
        out = []
        for case in train:
            if isinstance(case, PreparedCase):
                out.append(prefix.apply(case))
            elif cache is not None and index > 0:
                out.append(cache.get_or_compute(prefix, case))
            else:
                out.append(prefix.apply(case))
        return out

    def apply(self, case: PreparedCase | Case) -> PreparedCase:
        """Run every step on one case (a ``Case`` is :func:`prepare`-d first), each input channel through its own
        steps.

        Raises:
            DataError: The case has another number of channels than the pipeline was fitted on.
        """
        current = case if isinstance(case, PreparedCase) else prepare(case)
        if current.num_channels != self.num_channels:
            raise DataError(f"{current.id} has {current.num_channels} input channel(s); the preprocessing was "
                            f"fitted on {self.num_channels}", path=current.native.image_path,
                            fix="give every channel the model was trained on, in the same order")
        if self.num_channels == 1:
            for step in self.steps:
                current = step.apply(current)
            return current
        for index in range(len(self.steps)):
            current = current.with_channels([self._channel_steps[channel][index].apply(current.channel(channel))
                                             for channel in range(self.num_channels)])
        return current

    def invert_probabilities(self, probs: FloatArray, case: PreparedCase | Case) -> FloatArray:
        """Class probabilities ``[K, X, Y, Z]`` on the pipeline's output grid, back on the native grid.

        Goes through the geometry steps in reverse; each renormalises so probabilities sum to 1. The
        native grid is that of ``case.native.image`` (or ``case.image`` for a ``Case``).
        """
        native = case.native.image if isinstance(case, PreparedCase) else case.image
        grids = [native]
        for step in self.steps:
            grids.append(step.output_grid(grids[-1]))
        out = np.asarray(probs, dtype=np.float32)
        if tuple(out.shape[1:]) != grids[-1].shape:
            raise ValueError(f"probabilities of shape {out.shape} do not match the pipeline's grid {grids[-1].shape}")
        for step, before in zip(reversed(self.steps), reversed(grids[:-1]), strict=True):
            if step.geometric:
                out = step.invert_probabilities(out, before)
        return out

    # ---------------------------------------------------------------- description
    def params(self) -> dict[str, Any]:
        """The configuration (JSON-able): ``{"name": ..., "steps": [{"name": ..., **params}, ...]}``."""
        return {"name": self.name, "steps": [{"name": s.name, **s.params()} for s in self.steps]}

    def state(self) -> list[dict[str, Any]]:
        """What each step learnt in ``fit`` (JSON-able; raises ``RuntimeError`` when not fitted); with several
        input channels, each step's entry is ``{"channels": [state of channel 0, ...]}``."""
        if self.num_channels == 1:
            return [step.state() for step in self.steps]
        return [{"channels": [self._channel_steps[c][i].state() for c in range(self.num_channels)]}
                for i in range(len(self.steps))]


def _build_step(index: int, entry: Mapping[str, Any]) -> PreprocessStep:
    if not isinstance(entry, Mapping) or "name" not in entry:
        raise ConfigError(f"preprocess.steps[{index}]={entry!r} must be a mapping with a 'name'")
    kind = str(entry["name"])
    if kind not in STEP_TYPES:
        raise ConfigError(
            f"preprocess.steps[{index}]: unknown step {kind!r}; known steps: {', '.join(STEP_TYPES)}"
        )
    step_type = STEP_TYPES[kind]
    allowed = [f.name for f in fields(step_type) if f.init]
    kwargs = {str(k): _plain(v) for k, v in entry.items() if k != "name"}
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        raise ConfigError(
            f"preprocess.steps[{index}] ({kind}): unknown parameter(s) {', '.join(unknown)}; "
            f"allowed: {', '.join(allowed) or 'none'}"
        )
    return step_type(**kwargs)


def _plain(value: Any) -> Any:
    """Lists (also OmegaConf ListConfig) become tuples so steps get hashable, plain values."""
    if isinstance(value, str | bytes) or not isinstance(value, Sequence):
        return value
    return tuple(_plain(v) for v in value)


# --------------------------------------------------------------------------------------------------------
# Disk cache
# --------------------------------------------------------------------------------------------------------
CACHE_FORMAT_VERSION = 1
_FILE_HASHES: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, remembered in memory per (path, size, modification time)."""
    resolved = Path(path).resolve()
    stat = resolved.stat()
    key = (str(resolved), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with resolved.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        _FILE_HASHES[key] = digest.hexdigest()
    return _FILE_HASHES[key]


def _volume_fingerprint(volume: Volume | None, path: Path | None) -> dict[str, Any] | None:
    if volume is None:
        return None
    content = f"file:{file_sha256(path)}" if path is not None else f"array:{array_sha256(volume.array)}"
    return {
        "content": content, "dtype": str(volume.array.dtype), "shape": list(volume.shape),
        "spacing_mm": list(volume.spacing_mm), "origin_mm": list(volume.origin_mm),
        "direction": list(volume.direction),
    }


class PreprocessCache:
    """Pipeline outputs on disk, one ``.npz`` per case and configuration.

    The key hashes the input content (sha256 of the image and label files, or of the arrays for
    in-memory cases, plus their loaded geometry), the pipeline params, the fitted state (e.g. the
    histogram reference's id and content hash), the brain-mask definition version and the cache format.
    Entries are written atomically (temporary file in the same folder, then ``os.replace``); an entry that
    cannot be read is recomputed with a warning.

    Args:
        directory: Cache folder (created on first write).
        compress: Store zip-compressed ``.npz`` (default). On IBSR this is ~1 MB instead of ~50 MB per
            case, for ~1 s once on writing and ~0.2 s instead of ~0.07 s per read.

    Attributes:
        hits, misses: Counters since construction.
    """

    def __init__(self, directory: str | Path, compress: bool = True) -> None:
        self.directory = Path(directory)
        self.compress = compress
        self.hits = 0
        self.misses = 0

    def key(self, pipeline: Pipeline, case: Case) -> str:
        """The hex cache key of ``case`` through ``pipeline`` (which must be fitted)."""
        payload = {
            "format": CACHE_FORMAT_VERSION,
            "mask": MASK_DEFINITION_VERSION,
            "image": _volume_fingerprint(case.image, case.image_path),
            "label": _volume_fingerprint(case.label, case.label_path),
            "pipeline": pipeline.params()["steps"],
            "state": pipeline.state(),
        }
        if case.extra:  # more input channels (one-channel keys are as before they existed)
            paths = case.extra_paths or (None,) * len(case.extra)
            payload["extra"] = [_volume_fingerprint(v, p) for v, p in zip(case.extra, paths, strict=True)]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    def path(self, pipeline: Pipeline, case: Case) -> Path:
        """Where ``case``'s entry for ``pipeline`` lives."""
        safe_id = re.sub(r"[^A-Za-z0-9_.-]", "_", case.id) or "case"
        return self.directory / f"{safe_id}-{self.key(pipeline, case)[:32]}.npz"

    def get_or_compute(self, pipeline: Pipeline, case: Case) -> PreparedCase:
        """The cached output of ``pipeline.apply(case)``, computing and storing it on a miss."""
        path = self.path(pipeline, case)
        if path.exists():
            loaded = self._load(path, case)
            if loaded is not None:
                self.hits += 1
                return loaded
        self.misses += 1
        result = pipeline.apply(case)
        self._store(path, result)
        return result

    def _load(self, path: Path, case: Case) -> PreparedCase | None:
        try:
            with np.load(path, allow_pickle=False) as data:
                image = np.asarray(data["image"], dtype=np.float32)
                mask = np.asarray(data["mask"], dtype=bool)
                label = np.asarray(data["label"], dtype=np.uint8) if "label" in data.files else None
                extra = np.asarray(data["extra"], dtype=np.float32) if "extra" in data.files else None
                spacing, origin, direction = (tuple(float(v) for v in data[k]) for k in ("spacing_mm", "origin_mm", "direction"))
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            warnings.warn(f"{path}: unreadable preprocessing cache entry ({exc}); recomputing", RuntimeWarning, stacklevel=3)
            return None
        if image.ndim != 3 or mask.shape != image.shape or (label is not None and label.shape != image.shape):
            warnings.warn(f"{path}: inconsistent preprocessing cache entry; recomputing", RuntimeWarning, stacklevel=3)
            return None
        if (label is None) != (case.label is None) or (0 if extra is None else len(extra)) != len(case.extra):
            return None
        if extra is not None and extra.shape[1:] != image.shape:
            warnings.warn(f"{path}: inconsistent preprocessing cache entry; recomputing", RuntimeWarning, stacklevel=3)
            return None
        geometry = ((spacing[0], spacing[1], spacing[2]), (origin[0], origin[1], origin[2]), direction)
        volume = Volume(image, *geometry)
        label_volume = None if label is None else Volume(label, *geometry)
        channels = () if extra is None else tuple(Volume(np.ascontiguousarray(a), *geometry) for a in extra)
        return PreparedCase(case.id, case.split, volume, label_volume, mask, case, channels)

    def _store(self, path: Path, result: PreparedCase) -> None:
        arrays: dict[str, np.ndarray] = {
            "image": np.asarray(result.image.array, dtype=np.float32),
            "mask": np.asarray(result.mask, dtype=bool),
            "spacing_mm": np.asarray(result.image.spacing_mm, dtype=np.float64),
            "origin_mm": np.asarray(result.image.origin_mm, dtype=np.float64),
            "direction": np.asarray(result.image.direction, dtype=np.float64),
        }
        if result.label is not None:
            arrays["label"] = np.asarray(result.label.array, dtype=np.uint8)
        if result.extra:
            arrays["extra"] = np.stack([np.asarray(v.array, dtype=np.float32) for v in result.extra])
        save = np.savez_compressed if self.compress else np.savez

        def write(tmp: Path) -> None:
            with open(tmp, "wb") as handle:
                save(handle, **arrays)  # type: ignore[arg-type]

        write_atomic(path, write)
