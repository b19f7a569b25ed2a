"""Corpus readers. Data is read in place, never copied into the repository."""

import gzip
import os
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """Where the shared corpora live: ``$G2LSTM_DATA``, else ``../shared/data`` beside the repo."""
    return Path(os.environ.get("G2LSTM_DATA", _REPO_ROOT.parent / "shared" / "data"))


def read_text(path: str | Path, what: str = "a UTF-8 text file") -> str:
    """The whole text of a UTF-8 file, plain or gzip (by the ``.gz`` suffix).

    A missing file, or bytes that are not UTF-8, give an error naming the file (and the line and
    column of the first bad byte) and what was expected; a leading byte-order mark is dropped and a
    NUL refused (:func:`checked_text`).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"expected {what} at {path}, but there is no such file")
    if path.suffix == ".gz":
        try:
            with gzip.open(path, "rb") as f:
                raw = f.read()
        except (OSError, EOFError) as error:
            raise ValueError(f"{path}: not a readable gzip file ({error}); expected {what}") from None
    else:
        raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        raise ValueError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[error.start]:02x} at column {column}); "
                         f"expected {what}") from None
    return checked_text(text, str(path), what)


BOM = "\ufeff"


def checked_text(text: str, where: str, what: str = "a UTF-8 text file") -> str:
    """``text`` without the byte-order mark an editor may put at its start (it would become part of
    the first word). A NUL character, or a BOM further on (files joined with their BOMs), would
    become tokens too: either is an error naming ``where`` (a path, or ``<stdin>``) and the line."""
    text = text.removeprefix(BOM)
    for bad, name in (("\x00", "a NUL byte (a binary file, or a UTF-16 one?)"),
                      (BOM, "a byte-order mark (U+FEFF) after the start of the file (files joined with their BOMs?)")):
        at = text.find(bad)
        if at >= 0:
            line = text.count("\n", 0, at) + 1
            column = at - (text.rfind("\n", 0, at) + 1) + 1
            raise ValueError(f"{where}:{line}: {name} at column {column}; expected {what}")
    return text
