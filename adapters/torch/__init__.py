"""PyTorch adapter: ``segmenter.TorchSegmenter`` wraps the networks in ``nets`` (UNet3D, VNet, NeuroNet).

``losses`` holds the Dice / cross-entropy losses and ``training`` the training loop, both driven by the
framework-neutral specs in ``bench.contract``.
"""
