"""Baselines stage: non-learned segmenters to compare the networks against (Table 1 row 1).

* ``registration``: SimpleITK registration (moments, similarity, affine, then demons or B-spline) and
  warping, configured by :class:`~bench.baselines.registration.RegistrationSpec`.
* ``atlas``: the atlas segmenters (MNI152, training-set atlas, multi-atlas) and
  :func:`~bench.baselines.atlas.build_atlas`.
"""
