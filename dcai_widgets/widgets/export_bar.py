"""ExportBar: download the labels from the page (CSV, JSONL or Parquet), below the App's tabs.

Found on a new user's walk through the served app (issue 14): the labels could only be exported from
Python (``session.export``; the Label tab's last line says so), which a person using the served page
has no way to run, and ``dcai-widgets`` has no export command. The bar writes ``Session.export`` into a
temporary file in the background and offers it as a download link (a ``data:`` URL, so it needs no
route on the server and works behind the team gate). People's labels (human, review, import) only by
default: propagated labels are a model's guesses and come only when asked for, with their source and
confidence columns. A file larger than ``MAX_BYTES`` is not put in the page (it would travel through the
kernel's websocket): the bar says to export it from Python instead.
"""
from __future__ import annotations

import base64
import html
import tempfile
from pathlib import Path
from typing import Any

import ipywidgets as W

from ..data.export import export_labels, label_table
from .threads import Background, Job

MIME = {"csv": "text/csv", "jsonl": "application/jsonl", "parquet": "application/vnd.apache.parquet"}
PEOPLE = ("human", "review", "import")
MAX_BYTES = 50 * 2**20


class ExportBar(W.HBox):
    """Format, "include propagated labels", an export button and the download link it makes."""

    def __init__(self, session: Any, name: str = "labels", background: bool = True) -> None:
        self.session, self.name = session, str(name)
        self.format = W.Dropdown(options=list(MIME), value="csv", description="export",
                                 layout=W.Layout(width="170px"))
        self.propagated = W.Checkbox(value=False, description="include propagated labels (model guesses)",
                                     indent=False, layout=W.Layout(width="auto"))
        self.button = W.Button(description="export labels", layout=W.Layout(width="auto"))
        self.link = W.HTML()
        self.button.on_click(lambda _b: self.export())
        self._job = Background(self._write, on_done=self._done, on_error=self._failed, name="dcai-export",
                               background=background)
        super().__init__([self.format, self.propagated, self.button, self.link],
                         layout=W.Layout(align_items="center", flex_flow="row wrap"))
        self.add_class("dcai-export-bar")

    def export(self) -> None:
        """Write the file in the background; the link appears when it is ready."""
        self.button.disabled = True
        self.link.value = "<i>exporting…</i>"
        self._job.request()

    def _write(self, job: Job) -> tuple[str, int, bytes]:
        fmt = self.format.value
        sources = (*PEOPLE, "propagated") if self.propagated.value else PEOPLE
        table = label_table(self.session, sources)   # read once: the file and its row count agree
        with tempfile.TemporaryDirectory(prefix="dcai-export-") as tmp:
            out = export_labels(self.session, Path(tmp) / f"{self.name}.{fmt}", format=fmt, sources=sources,
                                table=table)
            job.check()
            data = out.read_bytes() if out.stat().st_size <= MAX_BYTES else b""
            return out.name, len(table), data

    def _done(self, res: tuple[str, int, bytes]) -> None:
        self.button.disabled = False
        name, rows, data = res
        if not data:
            self.link.value = (f'<span class="dcai-error">{html.escape(name)} is over {MAX_BYTES >> 20} MB: '
                               "export it from Python, <code>session.export(path)</code></span>")
            return
        fmt = name.rsplit(".", 1)[-1]
        href = f"data:{MIME[fmt]};base64,{base64.b64encode(data).decode('ascii')}"
        what = f"{rows:,} item{'s' if rows != 1 else ''}" + (" incl. propagated labels" if self.propagated.value else "")
        self.link.value = (f'<a class="dcai-download" download="{html.escape(name)}" href="{href}">⤓ '
                           f"{html.escape(name)}</a> ({what}, {len(data):,} bytes)")

    def _failed(self, e: BaseException) -> None:
        self.button.disabled = False
        self.link.value = f'<span class="dcai-error">not exported: {html.escape(str(e) or repr(e))}</span>'


__all__ = ["ExportBar"]
