"""Training, framework-neutral: the one training loop (``loop``), learning-rate schedules (``schedules``),
deep supervision weights (``deep_supervision``), what both frameworks' segmenters share (``segmenter``) and
the lazy path to a framework's adapter (``frameworks``)."""
