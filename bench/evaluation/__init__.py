"""Evaluation stage: score predicted label maps and turn the scores into the paper's tables.

Every class of the dataset's label set (``bench.data.labels.LabelSet``; IBSR's by default) is scored and
reported by its name; the paper's numbers are set beside ours for IBSR18 only.

* ``metrics``: Dice, AVD, HD, HD95 and ASSD per class (medpy 0.5.2's definitions; brainbench's own
  empty-mask rule).
* ``evaluate``: per-case rows, ``summary.json`` and folder pairing (``bench evaluate``).
* ``runs``: which MLflow runs make each Table 1 row (one split per report; newest per seed and fold).
* ``report``: those runs -> Table 1 / Table 2 beside the paper's values, with intervals and paired tests
  (``bench report``).
* ``stats``: per-subject values over seeds and folds, bootstrap intervals, Wilcoxon signed-rank against a
  reference row with Holm's correction, mean ranks.
* ``plots``: box plots, the ranking plot, and tri-planar overlays cropped to the brain with error maps.
* ``paper``: the paper's published Table 1 / Table 2 numbers.
"""
