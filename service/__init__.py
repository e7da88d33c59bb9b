"""The dwserve HTTP service: settings, Open Inference Protocol v2 routes, batching, metrics, CLI."""

__version__ = "0.1.0"
