"""Keras networks, one file each: ``build_<name>(config) -> keras.Model`` from ``bench.networks.configs``.

Each returns a channels-last functional model whose spatial dimensions are ``None`` (one model serves
every valid patch size); the layers they share are in ``adapters.tf.layers``. ``bench.networks.registry`` names
each function as its architecture's TF builder.
"""
