"""/v1/classify: an uploaded image -> top-k labels, through the same batcher as /v2 infer
(a classify request and a v2 request of the same shape and impl can share a forward)."""
from __future__ import annotations

import io
from typing import Any

import numpy as np

from ..runtime import ModelRuntime


class ClassifyHandler:
    def setup(self, runtime: ModelRuntime) -> "ClassifyHandler":
        self.rt = runtime
        served = runtime.served
        self.input_name = served.inputs[0].name
        self.output_name = served.outputs[0].name
        self.preprocess = served.preprocess                       # PIL.Image -> (3, H, W) tensor
        num = served.outputs[0].shape[-1]
        labels = list(getattr(served, "labels", None) or [])
        self.labels = labels if len(labels) == num else [f"class_{i}" for i in range(num)]
        return self

    def decode(self, data: bytes) -> np.ndarray:
        """Image bytes -> (1, 3, H, W) float32. Runs off the event loop (CPU-heavy)."""
        from PIL import Image

        if not data:
            raise ValueError("file: expected a non-empty image upload (JPEG, PNG, ...)")
        limit = self.rt.settings.max_image_pixels
        try:
            with Image.open(io.BytesIO(data)) as img:   # lazy: reads the header only
                w, h = img.size
                if w * h > limit:
                    raise ValueError(f"file: image is {w}x{h} = {w * h} pixels; the limit is {limit} (DWSERVE_MAX_IMAGE_PIXELS)")
                img.load()
                rgb = img.convert("RGB")
        except ValueError:
            raise
        except Exception as exc:  # noqa: BLE001 - PIL raises OSError, SyntaxError, ... on bad files
            raise ValueError(f"file: expected an image Pillow can decode (JPEG, PNG, ...): {type(exc).__name__}: {exc}"[:300]) from None
        x = self.preprocess(rgb)
        return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)[None]

    async def predict(self, image: np.ndarray, impl: str) -> np.ndarray:
        result = await self.rt.infer({self.input_name: image}, impl)
        return result.outputs[self.output_name][0]

    def encode(self, logits: np.ndarray, top_k: int, impl: str) -> dict[str, Any]:
        z = logits.astype(np.float64) - logits.max()
        probs = np.exp(z) / np.exp(z).sum()
        k = min(top_k, probs.size)
        top = np.argsort(-probs, kind="stable")[:k]
        return {"model": self.rt.name,
                "labels": [{"index": int(i), "label": self.labels[i], "score": float(probs[i])} for i in top],
                "parameters": {"depthwise_impl": impl}}
