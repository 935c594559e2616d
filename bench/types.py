"""Shared type aliases and label constants.

Array axis order, used everywhere in brainbench: a volume's array is indexed ``[x, y, z]`` in NIfTI voxel
order (the order nibabel shows), so ``Volume.spacing_mm[i]`` is the voxel size along array axis ``i``.
Batches crossing the framework boundary are channels-first: ``float32[B, C, X, Y, Z]``.
"""

from __future__ import annotations

from typing import Final

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
"""Any float32 array (images, probabilities, batches)."""
LabelArray = npt.NDArray[np.integer]
"""Integer label map; values in ``LABELS``."""
BoolArray = npt.NDArray[np.bool_]
Spacing = tuple[float, float, float]
"""Voxel size in millimetres along array axes (x, y, z)."""
Shape3 = tuple[int, int, int]

BACKGROUND: Final = 0
CSF: Final = 1
GM: Final = 2
WM: Final = 3
LABELS: Final = (BACKGROUND, CSF, GM, WM)
NUM_CLASSES: Final = 4
TISSUE_NAMES: Final = {CSF: "CSF", GM: "GM", WM: "WM"}
"""Scored classes (background is never scored)."""
