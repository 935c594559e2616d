"""Preprocessing stage (paper §4.1): fit on training cases, apply to any case, invert to the native grid.

* ``steps``: one class per step (spacing normalisation, histogram matching, CLAHE, standardisation), the
  brain mask, :class:`~bench.preprocess.steps.PreparedCase` and :func:`~bench.preprocess.steps.prepare`.
* ``pipeline``: :class:`~bench.preprocess.pipeline.Pipeline` (steps from config dicts or presets) and the
  on-disk :class:`~bench.preprocess.pipeline.PreprocessCache`; it re-exports the step names in its
  ``__all__``.
"""
