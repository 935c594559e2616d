"""A dataset's label set: the names and stored values of its classes, and the mapping to class indices.

Inside brainbench a label map holds *class indices* ``0 .. K-1`` (index 0 is background, never scored):
the network's output channel ``k`` is class ``k``. On disk a dataset may use any non-negative integer values,
not necessarily contiguous (``{"background": 0, "CSF": 1, "lesion": 10}``): :meth:`LabelSet.to_indices` maps
them on loading and :meth:`LabelSet.to_values` maps predictions back before they are written. IBSR18 and the
built-in synthetic cohort use :data:`IBSR_LABELS` (values equal indices), so nothing changes for them.

Example:
    >>> labels = LabelSet(("background", "CSF", "lesion"), (0, 1, 10))
    >>> labels.scored
    ('CSF', 'lesion')
    >>> labels.index("lesion"), labels.values[labels.index("lesion")]
    (2, 10)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from bench.errors import ConfigError

MAX_CLASSES: Final = 255
"""Class indices are stored as uint8."""


@dataclass(frozen=True)
class LabelSet:
    """Class names and their stored label values, background first (value 0).

    Attributes:
        names: One unique, non-empty name per class; ``names[0]`` is the background.
        values: The integer each class has in the label files (``values[0] == 0``), unique, any order after 0.
    """

    names: tuple[str, ...]
    values: tuple[int, ...]

    def __post_init__(self) -> None:
        names, values = tuple(str(n) for n in self.names), tuple(self.values)
        object.__setattr__(self, "names", names)
        if len(names) != len(values):
            raise ConfigError(f"label set has {len(names)} names but {len(values)} values")
        if len(names) < 2:
            raise ConfigError(f"label set {dict(zip(names, values, strict=True))} needs a background and at least "
                              "one class to segment")
        if len(names) > MAX_CLASSES:
            raise ConfigError(f"label set has {len(names)} classes; at most {MAX_CLASSES} are supported")
        for value in values:
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ConfigError(f"label value {value!r} must be an integer >= 0",
                                  fix="nnU-Net region labels (lists of values) are not supported")
        object.__setattr__(self, "values", tuple(int(v) for v in values))
        if self.values[0] != 0:
            raise ConfigError(f"label set's first class {names[0]!r} has value {self.values[0]}; the background "
                              "must be value 0", fix='list the background first, e.g. {"background": 0, ...}')
        for kind, items in (("name", names), ("value", self.values)):
            repeated = sorted({str(i) for i in items if items.count(i) > 1})
            if repeated:
                raise ConfigError(f"label set repeats the {kind} {', '.join(repeated)}", fix=f"give every class its own {kind}")
        if any(not n.strip() for n in names):
            raise ConfigError("label set has an empty class name")

    # ------------------------------------------------------------------ building
    @classmethod
    def from_mapping(cls, labels: Mapping[str, Any], *, source: str = "labels") -> LabelSet:
        """From nnU-Net's ``{"name": value}``: background (value 0) first, the rest in ascending value.

        Raises:
            ConfigError: A region label (a list of values), a non-integer or negative value, no value 0.
        """
        if not isinstance(labels, Mapping) or not labels:
            raise ConfigError(f"{source}={labels!r} must be a non-empty mapping of class name to label value")
        items: list[tuple[str, int]] = []
        for name, value in labels.items():
            if isinstance(value, (list, tuple)):
                raise ConfigError(f"{source}: {name!r} is a region label {list(value)}; region-based training "
                                  "(nnU-Net regions) is not supported", fix="give each class one integer value")
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise ConfigError(f"{source}: {name!r} has value {value!r}; label values must be integers >= 0")
            items.append((str(name), int(value)))
        if 0 not in [v for _, v in items]:
            raise ConfigError(f"{source} has no class with value 0", fix='add the background, e.g. "background": 0')
        items.sort(key=lambda item: item[1])
        return cls(tuple(n for n, _ in items), tuple(v for _, v in items))

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | Sequence[Any] | None) -> LabelSet:
        """From :meth:`record` (``None``: the IBSR labels, as written before label sets existed)."""
        if record is None:
            return IBSR_LABELS
        if isinstance(record, Mapping):
            return cls(tuple(record), tuple(int(v) for v in record.values()))
        return cls(tuple(str(n) for n, _ in record), tuple(int(v) for _, v in record))

    def record(self) -> dict[str, int]:
        """``{name: value}`` in class-index order (JSON-able; :meth:`from_record` reads it back)."""
        return dict(zip(self.names, self.values, strict=True))

    # ------------------------------------------------------------------ queries
    @property
    def num_classes(self) -> int:
        """Output channels of a network for this label set (background included)."""
        return len(self.names)

    @property
    def background(self) -> str:
        return self.names[0]

    @property
    def scored(self) -> tuple[str, ...]:
        """The classes that are scored and reported (every class but the background), in index order."""
        return self.names[1:]

    @property
    def scored_indices(self) -> tuple[int, ...]:
        return tuple(range(1, self.num_classes))

    def name_of(self, index: int) -> str:
        """The name of class index ``index``."""
        return self.names[index]

    def index(self, name_or_value: str | int, *, setting: str = "label") -> int:
        """The class index of a class named ``name_or_value``, or of the class whose stored value it is.

        Raises:
            ConfigError: No such class; names the known ones.
        """
        if isinstance(name_or_value, str):
            if name_or_value in self.names:
                return self.names.index(name_or_value)
            folded = [n.lower() for n in self.names]
            if name_or_value.lower() in folded:
                return folded.index(name_or_value.lower())
        elif (not isinstance(name_or_value, bool) and isinstance(name_or_value, (int, np.integer))
              and int(name_or_value) in self.values):
            return self.values.index(int(name_or_value))
        raise ConfigError(f"{setting}={name_or_value!r} is not a class of this dataset",
                          fix=f"use one of {', '.join(self.describe_classes())}")

    def describe_classes(self) -> list[str]:
        """``["CSF (1)", "GM (2)", ...]``: the scored classes with their stored values."""
        return [f"{n} ({v})" for n, v in zip(self.names[1:], self.values[1:], strict=True)]

    def describe(self) -> str:
        """``0 background, 1 CSF, 2 GM, 3 WM``: values and names, as error messages show them."""
        return ", ".join(f"{v} {n}" for n, v in zip(self.names, self.values, strict=True))

    @property
    def contiguous(self) -> bool:
        """Whether stored values equal class indices (no mapping needed)."""
        return self.values == tuple(range(self.num_classes))

    def as_indices(self) -> LabelSet:
        """The same classes with values = class indices (for label maps already mapped by :meth:`to_indices`)."""
        return LabelSet(self.names, tuple(range(self.num_classes)))

    # ------------------------------------------------------------------ mapping
    def unknown_values(self, array: npt.NDArray[Any]) -> list[int]:
        """Stored values in ``array`` that no class has (sorted, at most 10)."""
        present = np.unique(array)
        return [int(v) for v in present if int(v) not in self.values or v != int(v)][:10]

    def to_indices(self, array: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
        """Stored label values -> class indices (uint8); the caller checks :meth:`unknown_values` first."""
        if self.contiguous:
            return np.asarray(array).astype(np.uint8, copy=False)
        lookup = np.zeros(max(self.values) + 1, dtype=np.uint8)
        lookup[list(self.values)] = np.arange(self.num_classes, dtype=np.uint8)
        return lookup[np.asarray(array).astype(np.intp, copy=False)]

    def to_values(self, indices: npt.NDArray[Any]) -> npt.NDArray[Any]:
        """Class indices -> stored label values (uint8 when every value fits, else uint16/int32)."""
        top = max(self.values)
        dtype = np.uint8 if top <= 255 else np.uint16 if top <= 65535 else np.int32
        if self.contiguous:
            return np.asarray(indices).astype(dtype, copy=False)
        return np.asarray(self.values, dtype=dtype)[np.asarray(indices).astype(np.intp, copy=False)]


IBSR_LABELS: Final = LabelSet(("background", "CSF", "GM", "WM"), (0, 1, 2, 3))
"""IBSR18's classes (and the synthetic cohort's): the paper's label set."""


def same_labels(a: LabelSet, b: LabelSet) -> bool:
    """Whether two label sets name the same classes with the same values in the same order."""
    return a.names == b.names and a.values == b.values


def names_in(labels: LabelSet, names: Iterable[str]) -> list[str]:
    """``names`` that are scored classes of ``labels``, in the label set's order."""
    wanted = set(names)
    return [n for n in labels.scored if n in wanted]
