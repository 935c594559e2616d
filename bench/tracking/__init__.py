"""Tracking: the only package that imports MLflow (``runs``, ``models``, ``sweep_members``, ``transfer``), and the checks of
a tracking URI or server that need no MLflow (``store``, ``server``)."""
