"""What a visitor sees when the app cannot be built: one escaped line, the traceback only in the log.

Voila with `show_tracebacks=False` would print "There was an error when executing cell [2]. Please run
Voilà with --show_tracebacks=True…", which tells an annotator nothing and an attacker which server this
is; the notebook catches the error and shows `error_panel(e)` instead.
"""
from __future__ import annotations

import html
import sys
import traceback

_PLAIN = (PermissionError, ValueError, FileNotFoundError, TimeoutError, KeyError)


def error_message(e: BaseException) -> str:
    """The sentence shown for `e`: its own message for the errors this package raises on bad input or
    a refused link, a generic line (details in the server log) for anything else."""
    if isinstance(e, _PLAIN):
        text = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        return text or type(e).__name__
    return f"the app could not start ({type(e).__name__}); the details are in the server's log"


def error_panel(e: BaseException):
    """An ipywidgets HTML line with the escaped message; the traceback goes to the kernel's stderr
    (the terminal running `dcai-widgets serve`)."""
    import ipywidgets as W

    traceback.print_exception(type(e), e, e.__traceback__, file=sys.stderr)
    panel = W.HTML(f'<p class="dcai-app-error" style="color:#a40000">Cannot open the app: '
                   f"{html.escape(error_message(e))}</p>")
    panel.add_class("dcai-app-error-panel")
    return panel
