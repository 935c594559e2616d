"""The paper's published numbers (Gomez, Vaca, Tascon 2020, Tables 1 and 2), for side-by-side reports.

AVD is in percent, HD in mm, both on the course's IBSR18 validation subjects.
"""

from __future__ import annotations

from typing import Final

TABLE1_ROWS: Final[dict[int, dict[str, str]]] = {
    1: {"model": "Atlas", "data": "Raw", "optimizer": "-", "loss": "-"},
    2: {"model": "VNet", "data": "Pre-processed", "optimizer": "Adadelta", "loss": "Dice"},
    3: {"model": "NeuroNet", "data": "Pre-processed", "optimizer": "Adam", "loss": "Cross entropy"},
    4: {"model": "NeuroNet", "data": "Raw", "optimizer": "Adam", "loss": "Dice"},
    5: {"model": "Basic 3D UNet", "data": "Raw", "optimizer": "Adadelta", "loss": "Dice"},
    6: {"model": "Basic 3D UNet", "data": "Pre-processed", "optimizer": "Adadelta", "loss": "Dice"},
    7: {"model": "Basic 3D UNet", "data": "Raw", "optimizer": "Adadelta", "loss": "Cross entropy"},
    8: {"model": "3D UNet + Resample", "data": "Pre-processed", "optimizer": "Adam", "loss": "Cross entropy"},
    9: {"model": "3D UNet + instance norm.", "data": "Pre-processed", "optimizer": "Adam", "loss": "Dice"},
}

# metric -> row -> (CSF, GM, WM)
PAPER_VALUES: Final[dict[str, dict[int, tuple[float, float, float]]]] = {
    "dice": {
        1: (0.821, 0.898, 0.806), 2: (0.860, 0.918, 0.920), 3: (0.822, 0.923, 0.903),
        4: (0.865, 0.912, 0.902), 5: (0.897, 0.937, 0.931), 6: (0.872, 0.904, 0.916),
        7: (0.896, 0.935, 0.919), 8: (0.893, 0.931, 0.922), 9: (0.920, 0.943, 0.937),
    },
    "avd": {
        1: (15.96, 4.05, 8.11), 2: (13.30, 6.99, 5.75), 3: (10.34, 5.41, 10.15),
        4: (11.72, 10.23, 14.15), 5: (9.87, 5.74, 7.29), 6: (14.33, 12.54, 10.48),
        7: (5.67, 7.08, 11.12), 8: (6.98, 7.39, 6.92), 9: (8.05, 2.92, 5.31),
    },
    "hd": {
        1: (50.972, 9.025, 14.300), 2: (30.320, 11.063, 12.808), 3: (29.182, 11.006, 10.180),
        4: (22.672, 10.794, 10.246), 5: (42.463, 12.017, 10.268), 6: (43.916, 11.960, 10.982),
        7: (33.229, 11.093, 8.720), 8: (26.246, 10.229, 9.389), 9: (16.645, 9.605, 7.521),
    },
}
CLASSES: Final = ("CSF", "GM", "WM")
"""The classes of ``PAPER_VALUES``' tuples (IBSR18's scored classes)."""
DATASETS: Final = ("ibsr18", "synthetic")
"""The data the paper's numbers are shown beside (``data.name``): IBSR18, and the built-in synthetic cohort that
stands in for it (IBSR's ids, grids and labels) when ``make reproduce-table1`` is given no dataset."""


def paper_value(metric: str, row: int | None, tissue: str) -> float | None:
    """The paper's value for a metric/row/tissue, or None when the row, metric or tissue is not in the paper."""
    if row is None or row not in PAPER_VALUES.get(metric, {}) or tissue not in CLASSES:
        return None
    return PAPER_VALUES[metric][row][CLASSES.index(tissue)]
