"""Preprocessing stage (paper §4.1): fit on training cases, apply to any case, invert to the native grid.

* ``prepared``: the brain mask, :class:`~bench.preprocess.prepared.PreparedCase` and
  :func:`~bench.preprocess.prepared.prepare`.
* ``steps``: the step classes by config name, one module each: ``spacing`` (spacing normalisation),
  ``intensity`` (standardisation, histogram matching), ``clahe``; their base class in ``base``.
* ``pipeline``: :class:`~bench.preprocess.pipeline.Pipeline` (steps from config dicts or presets) and the
  on-disk :class:`~bench.preprocess.pipeline.PreprocessCache`; it re-exports the step names in its
  ``__all__``.
"""
