"""MobileNetV2 preprocessing (models.mobilenet_io.preprocess) against the plain
resize-the-whole-image-then-crop reference, and its cost bound on extreme aspect ratios.

preprocess resamples only the centre crop's window from the source region it covers; the
reference below is torchvision's eval transform written out in Pillow (Resize(256) on the
shorter side, bilinear, then CenterCrop(224)). They must agree to 1/255 (Pillow rounds its
8-bit output; the sample centres are computed in a different order), and a sliver image must
never be resized whole (a 100000x1 PNG of 300 bytes would become 25.6M x 256 pixels)."""
import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from models.mobilenet_io import CROP, IMAGENET_MEAN, IMAGENET_STD, RESIZE, preprocess


def reference(img: Image.Image) -> np.ndarray:
    """(3, 224, 224) in [0, 1]: resize the whole image, then crop the centre."""
    img = img.convert("RGB")
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(RESIZE * long / short)
    img = img.resize((RESIZE, new_long) if w <= h else (new_long, RESIZE), Image.BILINEAR)
    w, h = img.size
    left, top = int(round((w - CROP) / 2.0)), int(round((h - CROP) / 2.0))
    img = img.crop((left, top, left + CROP, top + CROP))
    return np.asarray(img, dtype=np.float32).transpose(2, 0, 1) / 255.0


def unnormalise(x) -> np.ndarray:
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(IMAGENET_STD, dtype=np.float32).reshape(3, 1, 1)
    return x.numpy() * std + mean


def _images(w, h, seed):
    rng = np.random.default_rng(seed)
    noise = Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    smooth = noise.resize((max(1, w // 8), max(1, h // 8))).resize((w, h), Image.BICUBIC)
    return noise, smooth


@pytest.mark.parametrize("w, h", [
    pytest.param(640, 480, id="landscape-downscale"), pytest.param(375, 500, id="portrait-downscale"),
    pytest.param(1024, 768, id="large"), pytest.param(256, 256, id="exact"),
    pytest.param(224, 224, id="upscale-square"), pytest.param(100, 333, id="upscale-portrait"),
    pytest.param(2000, 17, id="wide-strip"), pytest.param(7, 300, id="tall-strip"),
    pytest.param(1, 1, id="one-pixel"), pytest.param(3000, 3001, id="odd-huge")])
def test_equals_resize_then_crop(w, h):
    for img in _images(w, h, seed=w * 7 + h):
        got = unnormalise(preprocess(img))
        want = reference(img)
        assert got.shape == want.shape == (3, CROP, CROP)
        assert np.abs(got - want).max() <= 1 / 255 + 1e-5, (w, h)
        assert np.mean(np.abs(got - want) > 1e-5) < 0.3   # off by one level at most, and rarely


def test_grayscale_and_palette_inputs_match_the_reference_too():
    img = Image.fromarray(np.random.default_rng(1).integers(0, 256, (300, 410), dtype=np.uint8))
    for mode in ("L", "P", "RGBA"):
        m = img.convert(mode)
        assert np.abs(unnormalise(preprocess(m)) - reference(m)).max() <= 1 / 255 + 1e-5


def _spy_on_resize(monkeypatch) -> list:
    """Records every Image.resize's output size; one larger than the crop fails the test
    before Pillow allocates it (the old path would ask for gigabytes)."""
    produced = []
    real_resize = Image.Image.resize

    def spy(self, out_size, *args, **kwargs):
        produced.append(tuple(out_size))
        assert out_size[0] * out_size[1] <= CROP * CROP, f"resized a {self.size} image whole to {out_size}"
        return real_resize(self, out_size, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "resize", spy)
    return produced


@pytest.mark.parametrize("size", [pytest.param((100000, 1), id="wide-sliver"),
                                  pytest.param((1, 100000), id="tall-sliver")])
def test_a_sliver_is_never_resized_whole(monkeypatch, size):
    """The reference would allocate 25.6M x 256 RGB pixels (18 GiB) here; preprocess resamples
    only the crop, so no resize may produce more than CROP x CROP pixels."""
    produced = _spy_on_resize(monkeypatch)
    x = preprocess(Image.new("RGB", size, (120, 30, 200)))
    assert produced == [(CROP, CROP)]
    assert np.allclose(unnormalise(x), np.array([120, 30, 200]).reshape(3, 1, 1) / 255, atol=1e-5)


def test_classify_decodes_a_sliver_png_cheaply(monkeypatch):
    """/v1/classify's decode (service/handlers/classify.py) with the real preprocess: a 100000x1
    PNG (a few hundred bytes, 1e5 pixels, under DWSERVE_MAX_IMAGE_PIXELS) is one 224x224 input."""
    from service.handlers.classify import ClassifyHandler

    buf = io.BytesIO()
    Image.new("RGB", (100000, 1), (0, 255, 0)).save(buf, format="PNG")
    handler = ClassifyHandler()
    handler.rt = SimpleNamespace(settings=SimpleNamespace(max_image_pixels=4096 * 4096))
    handler.preprocess = preprocess
    produced = _spy_on_resize(monkeypatch)
    x = handler.decode(buf.getvalue())
    assert x.shape == (1, 3, CROP, CROP) and x.dtype == np.float32
    assert produced == [(CROP, CROP)]


@pytest.mark.parametrize("mode", ["I;16", "I;16B", "I"])
def test_sixteen_bit_grayscale_is_scaled_not_clipped(mode):
    """convert("RGB") clips samples above 255, so a 16-bit grayscale image (I;16, or I from
    older Pillow and 32-bit TIFF) was all white; preprocess scales it as its 8-bit twin."""
    ramp = np.tile(np.linspace(0, 65535, 300).astype(np.uint16), (280, 1))
    wide = Image.fromarray(ramp.astype({"I;16": "<u2", "I;16B": ">u2", "I": np.int32}[mode]))
    assert wide.mode == mode
    want = preprocess(Image.fromarray((ramp // 257).astype(np.uint8)))
    assert np.abs(unnormalise(preprocess(wide)) - unnormalise(want)).max() <= 1.5 / 255


def test_float_pixels_are_refused_not_clipped():
    with pytest.raises(ValueError, match="8- or 16-bit"):
        preprocess(Image.new("F", (40, 40), 0.5))
