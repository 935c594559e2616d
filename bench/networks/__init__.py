"""Networks, framework-neutral: each built-in architecture's typed config (``configs``), the registry of
architectures and their builders (``registry``), and networks named by their import path (``target``).
Nothing here imports a framework: builders are ``"module:attribute"`` strings resolved when a network is built."""
