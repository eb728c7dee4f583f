"""Per-project labeling guidelines shown at the top of the app, collapsible, as annotation tools do.

The text is markdown from `App(guidelines=...)` or the file named by env DCAI_GUIDELINES (what
`dcai-widgets serve --guidelines FILE` sets). It is rendered by a small markdown subset written here on
top of `html.escape`, so it is safe by construction on a page that faces the network: every character
of the file is escaped first, then only these constructs become markup: headings (#, ##, ###),
paragraphs, "-"/"*"/"1." lists, **bold**, *italic*, `code`, and [links](https://...) whose address is
http(s) or mailto (anything else stays plain text). No raw HTML passes through.
"""
from __future__ import annotations

import html
import os
import re
from collections.abc import Mapping
from pathlib import Path

import ipywidgets as W

MAX_CHARS = 20_000   # a guidelines file is a page of text; a bigger file is cut with a note

_LINK = re.compile(r"\[([^\]]+)\]\(((?:https?://|mailto:)[^\s)\"'<>]+)\)")
_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_ITALIC = re.compile(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])")


def _inline(escaped: str) -> str:
    """Inline markup on already-escaped text (html.escape turned & < > \" ' into entities)."""
    codes: list[str] = []

    def keep(m: re.Match) -> str:
        codes.append(f"<code>{m.group(1)}</code>")
        return f"\x00{len(codes) - 1}\x00"

    s = _CODE.sub(keep, escaped)
    s = _LINK.sub(lambda m: f'<a href="{m.group(2)}" target="_blank" rel="noopener noreferrer">{m.group(1)}</a>', s)
    s = _BOLD.sub(r"<b>\1</b>", s)
    s = _ITALIC.sub(r"<i>\1</i>", s)
    return re.sub("\x00(\\d+)\x00", lambda m: codes[int(m.group(1))], s)


def render_markdown(text: str) -> str:
    """Safe HTML for a small markdown subset (see the module docstring); raw HTML is shown as text."""
    text = str(text)
    cut = len(text) > MAX_CHARS
    lines = html.escape(text[:MAX_CHARS], quote=True).replace("\r\n", "\n").split("\n")
    out: list[str] = []
    para: list[str] = []
    lst: str | None = None

    def flush_para() -> None:
        if para:
            out.append("<p>" + _inline(" ".join(para)) + "</p>")
            para.clear()

    def close_list() -> None:
        nonlocal lst
        if lst:
            out.append(f"</{lst}>")
            lst = None

    for raw in lines:
        line = raw.strip()
        h = re.match(r"^(#{1,3})\s+(.*)$", line)
        ul = re.match(r"^[-*]\s+(.*)$", line)
        ol = re.match(r"^\d+[.)]\s+(.*)$", line)
        if not line:
            flush_para()
            close_list()
        elif h:
            flush_para()
            close_list()
            level = len(h.group(1)) + 2          # h3..h5: smaller than the page's own headings
            out.append(f"<h{level}>{_inline(h.group(2))}</h{level}>")
        elif ul or ol:
            flush_para()
            kind = "ul" if ul else "ol"
            if lst != kind:
                close_list()
                out.append(f"<{kind}>")
                lst = kind
            out.append(f"<li>{_inline((ul or ol).group(1))}</li>")
        else:
            close_list()
            para.append(line)
    flush_para()
    close_list()
    if cut:
        out.append(f"<p><i>(guidelines cut at {MAX_CHARS:,} characters)</i></p>")
    return "\n".join(out)


def load_guidelines(guidelines: str | os.PathLike | None = None,
                    environ: Mapping[str, str] | None = None) -> str | None:
    """The guidelines markdown: `guidelines` itself (text, or a Path to a file), else the file named by
    env DCAI_GUIDELINES; None when neither is set. A file that cannot be read raises ValueError naming it."""
    env = os.environ if environ is None else environ
    source: str | os.PathLike | None = guidelines
    if source is None:
        path = env.get("DCAI_GUIDELINES") or None
        if path is None:
            return None
        source = Path(path)
    if isinstance(source, Path):
        try:
            return source.expanduser().read_text(encoding="utf-8", errors="replace")
        except OSError as e:
            raise ValueError(f"cannot read the guidelines file {str(source)!r}: {e.strerror or e}") from None
    return str(source)


def guidelines_widget(markdown: str, title: str = "Guidelines", open: bool = True) -> W.HTML:
    """A collapsible box (<details>) with the rendered guidelines."""
    body = render_markdown(markdown)
    return W.HTML(f'<details class="dcai-guidelines" {"open" if open else ""}><summary><b>'
                  f"{html.escape(title)}</b></summary>{body}</details>")
