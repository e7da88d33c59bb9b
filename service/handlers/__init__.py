"""Per-model request handlers, LitServe-style: `setup` (bind to a loaded model),
`decode` (wire request -> validated arrays; ValueError on bad input), `predict` (through
the model's batcher, never on the event loop) and `encode` (arrays -> wire response).
GenerateHandler's predict and encode are one async stream, `events` (each token's event as
the model's GenerationScheduler makes it), which every generation route renders its own way.
Routes stay thin: they only read the HTTP request and call these steps.
"""
from .classify import ClassifyHandler
from .generate import GenerateHandler
from .tensor import TensorHandler

__all__ = ["ClassifyHandler", "GenerateHandler", "TensorHandler"]
