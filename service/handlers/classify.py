"""/v1/classify: an uploaded image -> top-k labels, through the same batcher as /v2 infer
(a classify request and a v2 request of the same shape and impl can share a forward)."""
from __future__ import annotations

import io
import re
from typing import Any

import numpy as np

from models.mobilenet_io import to_rgb

from ..errors import ServiceError
from ..runtime import ModelRuntime

# What /v1/classify decodes: what cameras, phones and browsers produce (a phone's MPO is read
# by the JPEG plugin). Every other Pillow plugin is attack surface no client needs: EPS runs
# Ghostscript where it is installed, and the rare decoders (PCX, SGI, FLI, ...) are where
# Pillow's decoder CVEs have been.
IMAGE_FORMATS = ("JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF")
TAKEN = "JPEG, PNG, GIF, BMP, WEBP or TIFF"
MAX_JPEG_SCANS = 100   # a progressive JPEG's scans (decode()); an encoder writes about 10


def _upright(img):
    """The image as it is meant to be seen: phones store the sensor's pixels and the way to
    show them in EXIF Orientation (tag 0x0112), which every viewer applies. A damaged EXIF
    block leaves the pixels as stored: the image itself is fine, and refusing it would help no one."""
    from PIL import ImageOps
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - Pillow's EXIF parser raises anything from struct.error to SyntaxError
        return img


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
        from PIL import Image, UnidentifiedImageError

        if not data:
            raise ValueError(f"file: expected a non-empty image upload ({TAKEN})")
        limit = self.rt.settings.max_image_pixels
        # Pillow refuses at open anything over 2 * Image.MAX_IMAGE_PIXELS (178956970 pixels by
        # default), so a DWSERVE_MAX_IMAGE_PIXELS above that was never reached: an image under it
        # was refused as over it. Raising Pillow's ceiling to ours (a process-wide value, only ever
        # raised, to the same number) leaves the check below the one that decides.
        if Image.MAX_IMAGE_PIXELS is not None and Image.MAX_IMAGE_PIXELS < limit:
            Image.MAX_IMAGE_PIXELS = limit
        try:
            img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)   # lazy: reads the header only
        except UnidentifiedImageError:   # its message is the repr of our BytesIO: a heap address
            raise ValueError(f"file: not an image in a format this server reads; expected {TAKEN}") from None
        except Image.DecompressionBombError as exc:   # Pillow's own ceiling, met before ours below
            pixels = re.search(r"\((\d+) pixels\)", str(exc))
            raise ValueError(f"file: image is {pixels[1] if pixels else 'too many'} pixels; the limit is {limit} "
                             "(DWSERVE_MAX_IMAGE_PIXELS)") from None
        except Exception as exc:  # noqa: BLE001 - a damaged header: OSError, SyntaxError, struct.error, ...
            raise ValueError(f"file: not a readable image ({type(exc).__name__}: {exc}); expected {TAKEN}"[:300]) from None
        with img:
            w, h = img.size
            if w * h > limit:
                raise ValueError(f"file: image is {w}x{h} = {w * h} pixels; the limit is {limit} (DWSERVE_MAX_IMAGE_PIXELS)")
            # A progressive JPEG is decoded scan by scan, each a pass over every block: a 16-byte
            # scan repeated cost 0.3 ms (at 4096x4096), 17 s of CPU a megabyte of upload, past any
            # timeout. An encoder writes about 10; FF DA occurs in a JPEG only as the scan marker
            # (entropy-coded 0xFF bytes are stuffed), so counting it counts scans (or a few more).
            # (MPO: a JPEG with a multi-picture header, which Pillow's JPEG opener turns into one)
            if img.format in ("JPEG", "MPO") and (scans := data.count(b"\xff\xda")) > MAX_JPEG_SCANS:
                raise ValueError(f"file: a JPEG of {scans} scans; expected at most {MAX_JPEG_SCANS}")
            try:
                img.load()
            except Exception as exc:  # noqa: BLE001 - Pillow raises OSError, ValueError, ... on damaged data
                raise ValueError(f"file: the {img.format} image could not be decoded; is it damaged or truncated? "
                                 f"({type(exc).__name__}: {exc})"[:300]) from None
            try:
                rgb = to_rgb(_upright(img))
            except ValueError as exc:   # mode F: no range to map to colours
                raise ValueError(f"file: {exc}") from None
        x = self.preprocess(rgb)
        return np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)[None]

    async def predict(self, image: np.ndarray, impl: str) -> np.ndarray:
        result = await self.rt.infer({self.input_name: image}, impl)
        return result.outputs[self.output_name][0]

    def encode(self, logits: np.ndarray, top_k: int, impl: str) -> dict[str, Any]:
        probs = softmax(logits)
        k = min(top_k, probs.size)
        top = np.argsort(-probs, kind="stable")[:k]
        return {"model": self.rt.name,
                "labels": [{"index": int(i), "label": self.labels[i], "score": float(probs[i])} for i in top],
                "parameters": {"depthwise_impl": impl}}


def softmax(logits: np.ndarray) -> np.ndarray:
    """(num_classes,) logits -> probabilities, float64. A +inf logit (a float16 model's
    overflow) was inf - inf = NaN for every class, answered as score null on classes 0..k-1;
    its limit is certainty, shared by the +inf classes. NaN logits, or all -inf, say nothing
    about the image: the model is broken, which is the server's fault (500), not the client's."""
    x = logits.astype(np.float64)
    top = x.max() if x.size else np.nan
    if np.isnan(x).any() or top == -np.inf:
        raise ServiceError(500, f"the model's logits are not usable ({int(np.isnan(x).sum())} NaN of {x.size}, "
                                f"max {top}); are its weights finite?")
    if top == np.inf:
        hot = x == np.inf
        return hot / np.count_nonzero(hot)
    e = np.exp(x - top)
    return e / e.sum()
