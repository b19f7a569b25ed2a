"""The page's data as bytes: quantised arrays behind a JSON header, gzipped and base64-encoded, and
the one HTML file that carries them with its own JavaScript and CSS.

Layout of the (uncompressed) payload, little-endian: ``b"G2X1"``, the header's length (uint32),
the header (UTF-8 JSON), zero bytes up to a multiple of 4, then each array at its ``offset``
(multiples of 4). The header's ``arrays`` list ``{"offset", "dtype" ('u1' | 'u2' | 'f4'), "shape"}``;
the rest of the header refers to arrays by their index. A quantised array stores
``q = round((v - lo) / (hi - lo) * levels)`` (``levels`` 255 for uint8, 65535 for uint16) and is read
as ``lo + q * ((hi - lo) / levels)``, in float64 on both sides (:func:`dequantise`).
"""

from __future__ import annotations

import base64
import gzip
import html
import json
import struct
from importlib import resources

import numpy as np

MAGIC = b"G2X1"
LEVELS = {"u1": 255, "u2": 65535}
_DTYPES = {"u1": np.uint8, "u2": np.uint16, "f4": np.float32}


class Payload:
    """Arrays added one by one (each gets an index), and a JSON-able header that refers to them."""

    def __init__(self):
        self.arrays: list[np.ndarray] = []
        self.specs: list[dict] = []

    def add(self, values: np.ndarray, dtype: str = "f4") -> int:
        """Store ``values`` as they are (``'f4'``) or as given integers (``'u1'``, ``'u2'``); its index."""
        array = np.ascontiguousarray(values, dtype=_DTYPES[dtype])
        self.arrays.append(array)
        self.specs.append({"dtype": dtype, "shape": list(array.shape)})
        return len(self.arrays) - 1

    def add_quantised(self, values: np.ndarray, bits: int = 8) -> dict:
        """Quantise ``values`` linearly between their min and max to ``bits`` (8 or 16) bits;
        ``{"array": index, "lo": .., "hi": .., "levels": ..}`` for the header."""
        if bits not in (8, 16):
            raise ValueError(f"bits must be 8 or 16, got {bits!r}")
        dtype = "u1" if bits == 8 else "u2"
        values = np.asarray(values, dtype=np.float64)
        lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        levels = LEVELS[dtype]
        q = np.zeros(values.shape) if hi == lo else np.rint((values - lo) / (hi - lo) * levels)
        return {"array": self.add(q, dtype), "lo": lo, "hi": hi, "levels": levels}

    def raw_bytes(self, header: dict) -> bytes:
        offsets, position = [], 0
        for array in self.arrays:
            offsets.append(position)
            position += -(-array.nbytes // 4) * 4
        header = dict(header, arrays=[dict(spec, offset=o) for spec, o in zip(self.specs, offsets)])
        text = json.dumps(header, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")
        head = MAGIC + struct.pack("<I", len(text)) + text
        head += b"\0" * (-len(head) % 4)
        body = bytearray(position)
        for array, offset in zip(self.arrays, offsets):
            body[offset:offset + array.nbytes] = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        return head + bytes(body)


def dequantise(q: np.ndarray, lo: float, hi: float, levels: int) -> np.ndarray:
    """The values a quantised array stands for, computed as the page computes them."""
    step = (hi - lo) / levels
    return lo + np.asarray(q, dtype=np.float64) * step


def read_payload(data: bytes) -> tuple[dict, list[np.ndarray]]:
    """The header and arrays of an uncompressed payload (the inverse of :meth:`Payload.raw_bytes`)."""
    if data[:4] != MAGIC:
        raise ValueError(f"not an explorer payload: starts with {data[:4]!r}, expected {MAGIC!r}")
    (length,) = struct.unpack("<I", data[4:8])
    header = json.loads(data[8:8 + length].decode("utf-8"))
    start = 8 + length + (-(8 + length) % 4)
    arrays = [np.frombuffer(data, dtype=np.dtype(_DTYPES[s["dtype"]]).newbyteorder("<"),
                            count=int(np.prod(s["shape"], dtype=np.int64)), offset=start + s["offset"]).reshape(s["shape"])
              for s in header["arrays"]]
    return header, arrays


def encode(raw: bytes) -> str:
    """gzip (deterministic: no timestamp) then base64."""
    return base64.b64encode(gzip.compress(raw, compresslevel=9, mtime=0)).decode("ascii")


def payload_of_page(page: str) -> tuple[dict, list[np.ndarray]]:
    """Read back the header and arrays of a written page (for tests and scripts)."""
    start = page.index('id="g2lstm-data">') + len('id="g2lstm-data">')
    text = page[start:page.index("</script>", start)]
    return read_payload(gzip.decompress(base64.b64decode(text)))


def _asset(name: str) -> str:
    return resources.files("g2lstm.explore").joinpath(name).read_text(encoding="utf-8")


def script_safe(text: str) -> str:
    """Text that cannot end the ``<script>`` or ``<style>`` element it sits in: ``</`` becomes ``<\\/``
    (``<\\/`` reads the same in JavaScript strings and regular expressions; the CSS holds none)."""
    return text.replace("</", "<\\/")


def page_html(title: str, data: str) -> str:
    """The one HTML file: the page's CSS and JavaScript inline, the data in a non-executed script element."""
    template = _asset("page.html")
    return (template.replace("{{title}}", html.escape(title))
            .replace("{{style}}", script_safe(_asset("page.css")))
            .replace("{{script}}", script_safe(_asset("page.js")))
            .replace("{{data}}", data))
