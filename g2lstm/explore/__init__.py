"""The explorer: one self-contained HTML page to look at 1 to 4 models of one task side by side
(see docs/explore.md).

    path = g2lstm.explore.build({"lstm": "runs/a/best.pt", "g2": "runs/b/best.pt"}, texts, "runs/explore/x.html")
    g2lstm.explore.show(path)        # in Jupyter: the same page in an iframe (srcdoc)

The page works from ``file://`` with no server and no network: its JavaScript and CSS are inline and
its data (quantised, gzipped, base64) is decoded in the browser. ``window.g2lstm`` in the page
exposes the decoded data and the functions its views call.
"""

from __future__ import annotations

import html
import os
from pathlib import Path

from .build import build
from .pack import payload_of_page

__all__ = ["build", "payload_of_page", "show"]


def show(page: str | os.PathLike | None = None, height: int = 800, **build_options):
    """Display an explorer page in Jupyter, in an iframe whose ``srcdoc`` is the page (no file
    served). ``page``: a written page's path, or None to :func:`build` one from ``build_options``.
    Returns the IPython display object; without IPython, an error says so."""
    try:
        from IPython.display import HTML
    except ImportError as error:
        raise ImportError("g2lstm.explore.show needs IPython (Jupyter); open the page built by "
                          "g2lstm.explore.build in a browser instead") from error
    path = Path(page) if page is not None else build(**build_options)
    text = path.read_text(encoding="utf-8")
    frame = (f'<iframe srcdoc="{html.escape(text, quote=True)}" style="width:100%;height:{int(height)}px;border:0" '
             'sandbox="allow-scripts allow-downloads"></iframe>')
    return HTML(frame)
