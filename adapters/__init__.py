"""What each framework needs of its own: ``adapters.torch`` and ``adapters.tf`` (networks, layers, losses,
steps, segmenter hooks). Both import ``bench`` downward and never each other; ``bench`` reaches them only
through ``bench.training.frameworks``, by name, when a network is built or loaded."""
