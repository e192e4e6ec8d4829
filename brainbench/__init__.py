"""brainbench: train and compare fMRI-to-vision decoders on the same data with the same evaluator."""

__version__ = "0.1.0"
