"""Shared fixtures: an isolated cache per test run, the demo session, and the ../shared data folder."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# One cache for the whole run (embeddings/maps are computed once), never the user's own cache.
os.environ.setdefault("DCAI_WIDGETS_CACHE", tempfile.mkdtemp(prefix="dcai-widgets-test-cache-"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def shared_data_dir() -> Path | None:
    """../shared/data beside the repo (or $DCAI_SHARED_DATA), or None when this clone has none."""
    env = os.environ.get("DCAI_SHARED_DATA")
    p = Path(env) if env else ROOT.parent / "shared" / "data"
    return p if p.is_dir() else None


@pytest.fixture
def shared_data() -> Path:
    p = shared_data_dir()
    if p is None:
        pytest.skip("../shared/data is absent (a user's clone has none); this test needs the shared datasets")
    return p


@pytest.fixture
def demo(tmp_path):
    """The digits demo with its own fresh label store file."""
    import dcai_widgets as dw

    return dw.Session.demo(store=tmp_path / "labels.db")


@pytest.fixture
def overlapping(tmp_path):
    """300 items of 4 overlapping classes with 60 true labels by "ada": a model right only ~70% of the time,
    whose 60 held-out labels pin its accuracy to about +-12 points (LANCET's fit is then "-imprecise")."""
    import numpy as np
    from sklearn.datasets import make_blobs

    import dcai_widgets as dw

    X, yt = make_blobs(n_samples=300, centers=4, cluster_std=6.0, n_features=4, random_state=2)
    s = dw.Session.from_embeddings(X.astype(np.float32), list("abcd"), y_true=yt, store=tmp_path / "o.db")
    ids = np.random.default_rng(0).choice(len(s), 60, replace=False)
    s.label(ids.tolist(), s.y_true[ids], annotator="ada")
    return s


# -- a private PostgreSQL server for the store tests ---------------------------------------------
def _pg_bin() -> Path:
    """Debian's PostgreSQL binaries: $DCAI_PG_BIN, else version 15, else the newest installed."""
    if os.environ.get("DCAI_PG_BIN"):
        return Path(os.environ["DCAI_PG_BIN"])
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3])
                   if p.parts[-3].isdigit() else 0)
    prefer = Path("/usr/lib/postgresql/15/bin")
    return prefer if (prefer / "initdb").exists() or not found else found[-1].parent


PG_BIN = _pg_bin()


class PgServer:
    """A throwaway PostgreSQL cluster (Debian's initdb + pg_ctl) on a free port and a private data dir.

    initdb refuses to run as root, so as root the server runs as the ``postgres`` system user (made with
    useradd if missing) through runuser; trust authentication on 127.0.0.1 only. Tests run it with
    fsync off (speed); ``durable=True`` keeps PostgreSQL's defaults (fsync, full-page writes) so that a
    benchmark's acknowledged label is on disk as in a deployment."""

    def __init__(self, root: Path, durable: bool = False):
        self.durable = bool(durable)
        import socket
        import subprocess

        self._sp = subprocess
        self.root = root
        self.data = root / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.user = "dcai"
        self.runas: list[str] = []
        if os.geteuid() == 0:
            import pwd

            try:
                pwd.getpwnam("postgres")
            except KeyError:
                subprocess.run(["useradd", "--system", "--no-create-home", "postgres"], check=True)
            self.runas = ["runuser", "-u", "postgres", "--"]
            os.chmod(root, 0o755)
            subprocess.run(["chown", "-R", "postgres", str(root)], check=True)
        self._n = 0
        self._run([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8",
                   "--no-sync", "--no-instructions"])
        self.start()

    def _run(self, cmd: list[str], check: bool = True):
        return self._sp.run(self.runas + cmd, check=check, capture_output=True, text=True, timeout=120)

    def start(self) -> None:
        opts = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
                + ("" if self.durable else "-c fsync=off -c full_page_writes=off ")
                + "-c max_connections=200 -c shared_buffers=64MB")
        r = self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "log"), "-o", opts,
                       "-w", "-t", "60", "start"], check=False)
        if r.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise RuntimeError(f"pg_ctl start failed: {r.stdout}{r.stderr}{log[-2000:]}")

    def stop(self, mode: str = "fast") -> None:
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop"], check=False)

    def restart(self) -> None:
        self.stop()
        self.start()

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        """A new empty database; returns its URL."""
        import psycopg

        self._n += 1
        name = f"t{os.getpid()}_{self._n}"
        with psycopg.connect(self.url(), autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """A private PostgreSQL server for this test run (stopped at the end); skipped, saying why, only
    when Debian's PostgreSQL 15 binaries are absent (`make test` installs them)."""
    if not (PG_BIN / "initdb").exists() or not (PG_BIN / "pg_ctl").exists():
        pytest.skip(f"PostgreSQL binaries not found in {PG_BIN} (apt-get install postgresql, or `make test`)")
    root = Path(tempfile.mkdtemp(prefix="dcai-pg-"))
    server = PgServer(root)
    yield server
    server.stop("immediate")
    import shutil

    shutil.rmtree(root, ignore_errors=True)
