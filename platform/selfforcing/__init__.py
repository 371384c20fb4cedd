"""Self Forcing: train and serve real-time autoregressive video diffusion models on Ray."""

__version__ = "0.1.0"
