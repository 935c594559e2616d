"""LabelSet: names and stored values, the index mapping both ways, and the errors for bad label sets."""

from __future__ import annotations

import numpy as np
import pytest

from bench.data.labels import IBSR_LABELS, LabelSet, same_labels
from bench.errors import ConfigError

FIVE = {"background": 0, "CSF": 1, "GM": 2, "WM": 3, "lesion": 10}


def test_from_mapping_orders_by_value_and_maps_both_ways() -> None:
    labels = LabelSet.from_mapping({"lesion": 10, "WM": 3, "background": 0, "GM": 2, "CSF": 1})
    assert labels.names == ("background", "CSF", "GM", "WM", "lesion")
    assert labels.values == (0, 1, 2, 3, 10)
    assert labels.num_classes == 5 and labels.scored == ("CSF", "GM", "WM", "lesion")
    assert not labels.contiguous
    stored = np.array([[0, 1, 10], [3, 2, 10]], dtype=np.int16)
    indices = labels.to_indices(stored)
    assert indices.dtype == np.uint8 and indices.tolist() == [[0, 1, 4], [3, 2, 4]]
    assert labels.to_values(indices).tolist() == stored.tolist()
    assert labels.unknown_values(np.array([0, 5, 10, 7])) == [5, 7]


def test_ibsr_labels_map_to_themselves() -> None:
    array = np.array([0, 1, 2, 3], dtype=np.uint8)
    assert IBSR_LABELS.contiguous
    assert IBSR_LABELS.to_indices(array).tolist() == [0, 1, 2, 3]
    assert IBSR_LABELS.to_values(array).dtype == np.uint8
    assert IBSR_LABELS.describe() == "0 background, 1 CSF, 2 GM, 3 WM"


def test_large_values_write_as_uint16() -> None:
    labels = LabelSet.from_mapping({"background": 0, "tumour": 300})
    assert labels.to_values(np.array([0, 1])).dtype == np.uint16
    assert labels.to_values(np.array([0, 1])).tolist() == [0, 300]


def test_index_by_name_value_or_case_folded_name() -> None:
    labels = LabelSet.from_mapping(FIVE)
    assert labels.index("lesion") == 4
    assert labels.index("csf") == 1
    assert labels.index(10) == 4
    with pytest.raises(ConfigError, match=r"sampling.oversample_class='edema' is not a class.*lesion \(10\)"):
        labels.index("edema", setting="sampling.oversample_class")


def test_record_round_trip() -> None:
    labels = LabelSet.from_mapping(FIVE)
    assert same_labels(LabelSet.from_record(labels.record()), labels)
    assert LabelSet.from_record(None) is IBSR_LABELS


@pytest.mark.parametrize(("mapping", "message"), [
    ({"background": 0, "tumour": [1, 2]}, "region label"),
    ({"background": 0, "CSF": -1}, "integers >= 0"),
    ({"background": 0, "CSF": 1.5}, "integers >= 0"),
    ({"CSF": 1, "GM": 2}, "no class with value 0"),
    ({"background": 0}, "at least one class"),
    ({"background": 0, "a": 1, "b": 1}, "repeats the value 1"),
])
def test_bad_label_sets_are_refused(mapping: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        LabelSet.from_mapping(mapping)
