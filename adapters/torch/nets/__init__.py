"""PyTorch networks, one file each, built from the framework-neutral configs in ``bench.networks.configs``.

Every network maps ``float32[B, C, X, Y, Z]`` to logits ``[B, K, X, Y, Z]``; the layers they share are in
``adapters.torch.layers``. ``bench.networks.registry`` names each class as its architecture's torch builder.
"""
