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
    column of the first bad byte) and what was expected.
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
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        raise ValueError(f"{path}:{line}: not valid UTF-8 (byte 0x{raw[error.start]:02x} at column {column}); "
                         f"expected {what}") from None
