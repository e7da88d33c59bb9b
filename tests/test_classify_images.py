"""/v1/classify's image decoding (service/handlers/classify.py over models.mobilenet_io) on
what clients really upload and on what an attacker sends: the pixels the model sees must be
the picture the client sees (EXIF orientation, 16-bit depth), and a file that is not a
supported image must be a 400 that says which formats are, without decoding it further."""
import io
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from models.mobilenet_io import CROP, IMAGENET_MEAN, IMAGENET_STD, preprocess
from service.handlers.classify import ClassifyHandler

LIMIT = 4096 * 4096


def _decode(data: bytes, max_image_pixels: int = LIMIT) -> np.ndarray:
    """ClassifyHandler.decode with the real preprocess -> (3, 224, 224) pixels in [0, 1]."""
    handler = ClassifyHandler()
    handler.rt = SimpleNamespace(settings=SimpleNamespace(max_image_pixels=max_image_pixels))
    handler.preprocess = preprocess
    x = handler.decode(data)[0]
    return x * np.asarray(IMAGENET_STD, np.float32).reshape(3, 1, 1) + np.asarray(IMAGENET_MEAN, np.float32).reshape(3, 1, 1)


def _encode(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def _asymmetric(w=300, h=200) -> Image.Image:
    """Left half red, right half blue, a green band at the top: every rotation and mirror differs."""
    a = np.zeros((h, w, 3), np.uint8)
    a[:, : w // 2, 0] = 255
    a[:, w // 2:, 2] = 255
    a[: h // 5, :, 1] = 255
    return Image.fromarray(a)


@pytest.mark.parametrize("orientation, transpose", [
    pytest.param(3, Image.Transpose.ROTATE_180, id="rotate-180"),
    pytest.param(6, Image.Transpose.ROTATE_270, id="rotate-90-cw"),
    pytest.param(8, Image.Transpose.ROTATE_90, id="rotate-90-ccw"),
    pytest.param(2, Image.Transpose.FLIP_LEFT_RIGHT, id="mirrored")])
def test_exif_orientation_is_applied(orientation, transpose):
    """Phones store pixels as the sensor read them and the way to show them in EXIF tag 0x0112;
    every viewer applies it. The model must see the upright picture, not the stored pixels."""
    stored = _asymmetric()
    exif = Image.Exif()
    exif[0x0112] = orientation
    upright = stored.transpose(transpose)
    got = _decode(_encode(stored, "PNG", exif=exif))
    want = _decode(_encode(upright, "PNG"))
    assert np.abs(got - want).max() < 1e-5


def test_a_corrupt_exif_block_does_not_refuse_a_good_image():
    """An EXIF block whose TIFF header is damaged makes Pillow's exif_transpose raise
    SyntaxError (not a ValueError: it would be a 500); the pixels are fine, so they are used."""
    got = _decode(_encode(_asymmetric(), "PNG", exif=b"Exif\x00\x00MX\x00*\x00\x00\x00\x08\x00\x00"))
    assert np.abs(got - _decode(_encode(_asymmetric(), "PNG"))).max() < 1e-5


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_sixteen_bit_grayscale_keeps_its_levels(mode):
    """A 16-bit grayscale PNG (medical, scientific, camera raw exports) opens as mode I;16 (I
    in older Pillow); convert("RGB") clips every value above 255 to white, so a gradient
    over 0..65535 reached the model as a white page. It must look like its 8-bit twin."""
    ramp = np.tile(np.linspace(0, 65535, 256).astype(np.uint16), (256, 1))   # dark left, bright right
    wide = Image.fromarray(ramp) if mode == "I;16" else Image.fromarray(ramp.astype(np.int32))
    assert wide.mode == mode
    eight = Image.fromarray((ramp // 257).astype(np.uint8))
    got, want = _decode(_encode(wide, "PNG" if mode == "I;16" else "TIFF")), _decode(_encode(eight, "PNG"))
    assert np.abs(got - want).max() <= 1.5 / 255
    assert got[:, :, :20].mean() < 0.15 and got[:, :, -20:].mean() > 0.85


def test_float_pixels_are_refused_naming_what_is_taken():
    with pytest.raises(ValueError, match="8- or 16-bit"):
        _decode(_encode(Image.new("F", (40, 40), 0.5), "TIFF"))


@pytest.mark.parametrize("data", [
    pytest.param(b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"/>', id="svg"),
    pytest.param(b"hello, not an image", id="text"),
    pytest.param(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", id="eps"),
    pytest.param(_encode(Image.new("RGB", (8, 8)), "PCX"), id="pcx")])
def test_what_is_not_a_supported_image_is_refused_by_name(data):
    """Only the common photo formats reach a decoder: every other Pillow plugin (EPS runs
    Ghostscript where it is installed; PCX, SGI, FLI, ... have had decoder CVEs) is attack
    surface no client needs. The message names the formats taken, not Pillow's repr of a
    BytesIO (which carried a heap address)."""
    with pytest.raises(ValueError) as info:
        _decode(data)
    message = str(info.value)
    assert "JPEG" in message and "PNG" in message and "WEBP" in message, message
    assert "0x" not in message and "Ghostscript" not in message, message


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "BMP", "WEBP", "TIFF"])
def test_the_common_formats_decode(fmt):
    img = _asymmetric().convert("P") if fmt == "GIF" else _asymmetric()
    assert _decode(_encode(img, fmt)).shape == (3, CROP, CROP)


def test_a_pixel_bomb_names_the_servers_limit():
    """A 1-pixel-of-data PNG declaring 100000x100000: Pillow refuses it at open with its own
    limit (178956970 pixels), which the message named instead of DWSERVE_MAX_IMAGE_PIXELS."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"\0\0\0\0")) + chunk(b"IEND", b""))
    with pytest.raises(ValueError, match=f"limit is {LIMIT} \\(DWSERVE_MAX_IMAGE_PIXELS\\)"):
        _decode(png)


def _scan_bomb(extra: int, mpo: bool = False) -> bytes:
    """A progressive JPEG with its smallest scan repeated `extra` times (libjpeg decodes on: each
    scan a pass over every block); mpo: with a multi-picture header (a second image after the
    first's end), which Pillow's JPEG opener makes an MPO."""
    jpg = _encode(_asymmetric(64, 64), "MPO" if mpo else "JPEG", progressive=True, quality=50,
                  **({"save_all": True, "append_images": [_asymmetric(8, 8)]} if mpo else {}))
    i, segments = 2, []
    while jpg[i + 1] != 0xD9:   # (marker, bytes) up to EOI; a scan runs to the next non-RST marker
        marker, end = jpg[i + 1], i + 2 + int.from_bytes(jpg[i + 2:i + 4], "big")
        if marker == 0xDA:
            while not (jpg[end] == 0xFF and jpg[end + 1] not in (0x00, *range(0xD0, 0xD8))):
                end += 1
        segments.append((marker, jpg[i:end]))
        i = end
    smallest = min((seg for m, seg in segments if m == 0xDA), key=len)
    return b"\xff\xd8" + b"".join(seg for _, seg in segments) + smallest * extra + jpg[i:]


def test_a_progressive_jpeg_of_too_many_scans_is_refused():
    """A repeated 16-byte scan cost 0.3 ms at 4096x4096: 17 s of CPU a megabyte of upload,
    beyond any request timeout. An encoder's own progression (about 10 scans) still decodes."""
    from service.handlers.classify import MAX_JPEG_SCANS
    plain = _scan_bomb(0)
    assert 5 <= plain.count(b"\xff\xda") <= 20 and _decode(plain).shape == (3, CROP, CROP)
    ok = _scan_bomb(MAX_JPEG_SCANS - plain.count(b"\xff\xda"))   # exactly the limit
    assert _decode(ok).shape == (3, CROP, CROP)
    with pytest.raises(ValueError, match=f"a JPEG of {MAX_JPEG_SCANS + 1} scans; expected at most {MAX_JPEG_SCANS}"):
        _decode(_scan_bomb(MAX_JPEG_SCANS + 1 - plain.count(b"\xff\xda")))
    mpo = _scan_bomb(MAX_JPEG_SCANS, mpo=True)   # the same bomb opened as MPO (format "MPO") was decoded
    assert Image.open(io.BytesIO(mpo)).format == "MPO"
    with pytest.raises(ValueError, match="scans; expected at most"):
        _decode(mpo)


def test_a_limit_above_pillows_own_is_honoured(monkeypatch):
    """DWSERVE_MAX_IMAGE_PIXELS above Pillow's ceiling (2 * Image.MAX_IMAGE_PIXELS, 178956970
    by default): an image under the configured limit was refused at open by Pillow, with the
    contradictory 'image is 180000000 pixels; the limit is 200000000'. Pillow's ceiling is
    lowered here so that the case costs kilobytes, not a 540 MB decode."""
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)          # Pillow refuses > 2000 pixels
    data = _encode(_asymmetric(60, 50), "PNG")                     # 3000 pixels
    want = _decode(data, max_image_pixels=3000 * 4)
    assert want.shape == (3, CROP, CROP)
    with pytest.raises(ValueError, match="image is 60x50 = 3000 pixels; the limit is 2999"):
        _decode(data, max_image_pixels=2999)


def test_an_infinite_logit_is_certainty_not_null_scores():
    """A +inf logit (float16 overflow): softmax's limit puts all the probability there; it was
    inf - inf = NaN everywhere, a 200 of null scores on classes 0..4 in index order. NaN
    logits are the server's fault: a 500 that says so, not scores of null."""
    from service.errors import ServiceError
    handler = ClassifyHandler()
    handler.rt, handler.labels = SimpleNamespace(name="mobilenet_v2"), ["a", "b", "c", "d"]
    got = handler.encode(np.array([1.0, np.inf, 2.0, -np.inf], np.float32), 3, "auto")["labels"]
    assert [(c["index"], c["score"]) for c in got] == [(1, 1.0), (0, 0.0), (2, 0.0)]
    got = handler.encode(np.array([np.inf, 0.0, np.inf, 5.0], np.float32), 2, "auto")["labels"]
    assert [(c["index"], c["score"]) for c in got] == [(0, 0.5), (2, 0.5)]
    finite = handler.encode(np.array([0.0, np.log(3.0), -np.inf, 0.0], np.float32), 4, "auto")["labels"]
    assert [c["index"] for c in finite] == [1, 0, 3, 2]
    assert np.allclose([c["score"] for c in finite], [0.6, 0.2, 0.2, 0.0])
    with pytest.raises(ServiceError, match="1 NaN of 4"):
        handler.encode(np.array([1.0, np.nan, 2.0, 0.0], np.float32), 3, "auto")
