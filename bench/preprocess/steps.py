"""Pre-processing steps of the paper's §4.1, one class per step, by config name (re-exported by
``bench.preprocess.pipeline``).

Every step has ``fit(cases)`` (learns from training cases only; a no-op for per-case steps),
``apply(case) -> PreparedCase``, ``params() -> dict`` (its configuration, JSON-able) and ``state() -> dict``
(what ``fit`` learnt, JSON-able; part of the cache key). Steps that change the voxel grid
(``geometric = True``) also have ``output_grid(grid)`` and ``invert_probabilities(probs, before)``, which
brings class probabilities from the step's output grid back to its input grid.

The base class lives in ``base``, the steps in ``spacing``, ``intensity`` and ``clahe``, the cases they
transform (and the brain mask) in ``prepared``.
"""

from __future__ import annotations

from bench.preprocess.base import PreprocessStep
from bench.preprocess.clahe import Clahe
from bench.preprocess.intensity import HistogramMatching, Standardisation
from bench.preprocess.spacing import SpacingNormalisation

STEP_TYPES: dict[str, type[PreprocessStep]] = {
    step.name: step for step in (SpacingNormalisation, Standardisation, HistogramMatching, Clahe)
}
"""Step classes by the ``name`` used in configs."""
