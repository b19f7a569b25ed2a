"""Corpus readers. Data is read in place, never copied into the repository."""

import os
from pathlib import Path

_REPO_ROOT = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """Where the shared corpora live: ``$G2LSTM_DATA``, else ``../shared/data`` beside the repo."""
    return Path(os.environ.get("G2LSTM_DATA", _REPO_ROOT.parent / "shared" / "data"))
