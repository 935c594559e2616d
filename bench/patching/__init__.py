"""Patching stage: cutting volumes into patches for training, and sliding-window prediction of whole volumes.

* ``windows``: the patch geometry both sides share (start corners, lazy symmetric padding,
  :func:`~bench.patching.windows.extract_patch`, the per-channel pad value).
* ``sampler``: the training :class:`~bench.patching.sampler.PatchSampler` (grid / random_subset / random,
  class oversampling) over :class:`~bench.patching.sampler.PatchSubject` objects.
* ``augment``: numpy data augmentation of training batches (flips, intensity scale/shift, gamma, noise).
* ``grid``: :class:`~bench.patching.grid.GridSampler`, the importance map and
  :class:`~bench.patching.grid.GridAggregator` (MONAI's positions and Gaussian blending).
* ``inference``: :func:`~bench.patching.inference.predict_volume` (tiling, batching, mask skipping, blending).
"""
