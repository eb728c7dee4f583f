"""Serve the app with `dcai-widgets serve` on a free port and drive it in headless Debian Chromium."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
PANEL_ID = ".dcai-label-panel .dcai-item-id"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cli() -> list[str]:
    exe = shutil.which("dcai-widgets", path=str(Path(sys.executable).parent))
    return [exe] if exe else [sys.executable, "-m", "dcai_widgets.cli"]


class Served:
    """A command serving HTTP on a free local port, in its own process group (Voila and its kernels),
    waited for until the port answers and killed as a group."""

    def __init__(self, cmd: list[str], log: Path, env: dict | None = None, what: str = "server") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            [a.format(port=self.port) for a in cmd], stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True, env=env if env is not None else os.environ.copy())
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{what} exited with {self.proc.returncode}; see {log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.3)
        self.kill()
        raise RuntimeError(f"{what} did not answer on {self.url} within 60 s; see {log}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the whole process group (Voila and its kernels) and reap the server."""
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        self.log.close()


class Server(Served):
    """`dcai-widgets serve` on a free port."""

    def __init__(self, store: Path, log: Path, data: str = "digits", annotator: str = "e2e") -> None:
        super().__init__(cli() + ["serve", "--data", data, "--store", str(store), "--port", "{port}",
                                  "--no-browser", "--annotator", annotator], log, what="dcai-widgets serve")


def serve_notebook(nb_path: Path, log: Path, env: dict | None = None) -> Served:
    """A notebook served by Voila on a free port."""
    return Served([sys.executable, "-m", "voila", str(nb_path), "--port={port}", "--no-browser",
                   "--Voila.ip=127.0.0.1"], log, env=env, what=f"voila {nb_path.name}")


def launch(playwright):
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def open_app(browser, url: str, timeout_s: float = 120):
    """A new page on the app, returned once the Label panel shows an item."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(url, timeout=timeout_s * 1000)
    page.locator(PANEL_ID).first.wait_for(timeout=timeout_s * 1000)
    return page


def shown(page) -> tuple[int, int]:
    """(item id, show counter) of the item the Label panel shows now."""
    el = page.locator(PANEL_ID).first
    return int(el.get_attribute("data-item")), int(el.get_attribute("data-seq"))


def press_and_wait(page, key: str, timeout_s: float = 30) -> tuple[int, int]:
    """Press `key` and wait until the panel shows the next item (the label's acknowledgement)."""
    _, seq = shown(page)
    page.keyboard.press(key)
    page.wait_for_function(
        "([sel, seq]) => { const e = document.querySelector(sel); return e && +e.dataset.seq > seq; }",
        arg=[PANEL_ID, seq], timeout=timeout_s * 1000)
    return shown(page)


# -- team mode (secret links) ----------------------------------------------------------------------
def links_in(log: Path) -> dict[str, str]:
    """{name: url} of the `NAME URL` lines `dcai-widgets serve` printed in team mode."""
    out = {}
    for line in Path(log).read_text().splitlines():
        name, _, url = line.rpartition(" ")  # a name may hold spaces; the URL never does
        if name and url.startswith("http") and "?token=" in url:
            out[name] = url
    return out


class TeamServer(Served):
    """`dcai-widgets serve --annotators ...` on a free port; `links` maps each name to its secret link."""

    def __init__(self, store: Path, log: Path, annotators: str = "ada,bo,cy:lead", data: str = "digits",
                 extra: list[str] | None = None) -> None:
        super().__init__(cli() + ["serve", "--data", data, "--store", str(store), "--port", "{port}",
                                  "--no-browser", "--annotators", annotators, *(extra or [])],
                         log, what="dcai-widgets serve (team)")
        self.log.flush()
        self.links = links_in(log)

    def token(self, name: str) -> str:
        return self.links[name].split("?token=", 1)[1]


def kernels(base_url: str, token: str | None = None) -> dict:
    """The server's GET /dcai/api/kernels (count, max, and the kernels for a lead or single user)."""
    import json
    import urllib.request

    url = base_url.rstrip("/") + "/dcai/api/kernels" + (f"?token={token}" if token else "")
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def human_labels(store_path) -> dict[int, tuple[str, str]]:
    """{item: (label, annotator)} of the live human labels in a store, read fresh from disk."""
    from dcai_widgets.store import open_store

    st = open_store(str(store_path))
    try:
        df = st.current(("human",))
        return {int(i): (lab, ann) for i, lab, ann in zip(df["id"], df["label"], df["annotator"])}
    finally:
        st.close()
