"""brainbench: a framework-neutral harness for patch-based brain MRI segmentation benchmarks."""

__version__ = "0.1.0"
