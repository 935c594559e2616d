"""Data stage: find a dataset's subjects, split them into sets, load and check them, or make synthetic ones.

* ``discovery``: the course and flat layouts, :func:`~bench.data.discovery.discover`, the IBSR18 table.
* ``splits``: named splits (course, paper, holdout) and explicit ones (:class:`~bench.data.splits.SplitSpec`).
* ``cohort``: :class:`~bench.data.cohort.Case`, :class:`~bench.data.cohort.Cohort`,
  :func:`~bench.data.cohort.load_cohort` with its per-file checks, and the per-subject summary.
* ``synth``: synthetic IBSR-like subjects and phantoms (``bench synth``).
"""
