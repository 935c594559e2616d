"""Applying trained models to new scans: the model folder (``package``), its loading and application with
ensembles and test-time flips (``model``), the scans given (``inputs``) and grids unlike the training data's
(``geometry``)."""
