"""Team load: 8 annotators label 2,000 items at once through the same widget code as the served app
(one process per annotator, each a Session + the team Label panel over a SharedQueue, pressing the
class key of the shown item as fast as the panel takes it), against SQLite and against PostgreSQL.

Reported per store: labels per second (all annotators), p95 keypress-to-next-item latency (the label
committed and the next item shown in the panel's widgets; no browser round trip), lost labels (an
acknowledged label missing from the store), duplicated labels (an item labeled by two annotators;
overlap is 0), duplicate claims (an item shown to two annotators), and a fault run: the annotators'
processes (SQLite) or the PostgreSQL server (all its processes) are SIGKILLed mid-load and restarted;
``lost_after_kill`` counts labels acknowledged before or after the kill that are not in the store.
``cpu_ms_per_label``: CPU time of the annotators' processes (every thread: label, claims, refits,
heartbeat) per label, a figure that a busy shared machine does not inflate the way it does latency.
``p95_paced_ms``: the same latency with every annotator pausing ``--paced-think`` s between labels,
as people do. ``mb_per_page``: resident memory of a process that built the full App in team mode (default LANCET
queue) on the same data, after its first fit. Baseline in the same run: one annotator alone with the
solo Label panel (no claims) on SQLite.

``cpu_ms_per_label_by``: the same split by thread (queue refits and team-fit checks, claims taken ahead,
the keypress path on the main thread); ``engine_fits`` / ``fits_adopted``: fits of the queue engine made
in the pages, and fits a page took from another page (one fit per team, dcai_widgets.team.team_fit).
``load_avg_*``: the machine's 1-minute load average sampled every second during each run.

Before/after in the same run: ``--before DIR`` (and optionally ``--after DIR``) name checkouts whose
``dcai_widgets`` the annotator processes import (PYTHONPATH); the older one runs the same flat-out and
paced runs first, reported under ``"before"``. For example::

    mkdir /tmp/team_old && git archive 490d9ae^ dcai_widgets | tar -x -C /tmp/team_old   # the team code before one fit per team
    nice -n 10 .venv/bin/python benchmarks/team_load.py --before /tmp/team_old

Last line: JSON ``{"sqlite": {...}, "postgresql": {...}, "baseline_solo": {...}}``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import team_staleness

ROOT = Path(__file__).resolve().parents[1]
CLASSES = [f"c{k}" for k in range(10)]


def dataset(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """n items in 10 Gaussian blobs, 16-d: a table of features like a small real project's embeddings."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 10, n)
    centres = rng.normal(scale=4.0, size=(10, 16))
    return (centres[y] + rng.normal(size=(n, 16))).astype(np.float32), y


# -- one annotator ---------------------------------------------------------------------------------
def worker(a: argparse.Namespace) -> None:
    """Build a session and the Label panel as a page's kernel would, then label until nothing is left
    (or ``--max`` labels). Log lines: ``S item`` when shown, ``A item label ms`` when acknowledged."""
    import dcai_widgets as dw
    from dcai_widgets.queue import UncertaintyQueue

    X, y = dataset(a.items)
    s = dw.Session.from_embeddings(X, CLASSES, y_true=y, store=a.store, cache_dir=a.cache)
    Path(a.out, f"{a.name}.code").write_text(str(Path(dw.__file__).parent))   # which code ran
    if a.solo:
        from dcai_widgets.widgets.label_panel import LabelPanel

        panel = LabelPanel(s, queue=UncertaintyQueue(s), annotator=a.name, initial_fit="background")
    else:
        from dcai_widgets.widgets.team import team_label_panel

        panel = team_label_panel(s, UncertaintyQueue(s), a.name)
    log = open(Path(a.out) / f"{a.name}.log", "a", buffering=1)
    cpu_by = thread_cpu_meter()
    trips = round_trip_meter()
    split = keypress_split(panel) if a.split else None
    Path(a.out, f"{a.name}.ready").touch()
    while not Path(a.out, "go").exists():
        time.sleep(0.01)
    done, errors = 0, 0
    cpu0 = time.process_time()   # this page's CPU (all its threads: label, claims, refits, heartbeat)
    main0 = time.thread_time()
    cpu_by.clear()
    trips.clear()
    while a.max <= 0 or done < a.max:
        i = panel.current
        if i is None:
            break
        log.write(f"S {i}\n")
        key = CLASSES[int(y[i])]
        t0 = time.perf_counter()
        try:
            panel.press(panel.shortcuts[CLASSES.index(key)])   # the keyboard path of a page
        except Exception as e:  # a store restarting: the item stays; try again
            errors += 1
            log.write(f"E {i} {type(e).__name__}\n")
            time.sleep(0.2)
            continue
        ms = (time.perf_counter() - t0) * 1000
        if panel._mine.get(i) == key:
            log.write(f"A {i} {key} {ms:.2f}\n")
            if split is not None:   # where this keypress's time went (--split)
                log.write("D " + " ".join(f"{k}={v * 1000:.1f}" for k, v in split.items()) + "\n")
                split.clear()
            done += 1
            if a.pace > 0:   # an expert's look at the next item before the next key
                time.sleep(a.pace)
        else:                # not saved yet (the panel says "saving…" and retries): wait a little
            time.sleep(0.05)
    cpu_by["keypress (main thread)"] = time.thread_time() - main0
    log.write(f"CPU {json.dumps(cpu_by)}\n")
    log.write(f"RT {json.dumps(trips)}\n")
    team = getattr(panel.queue, "team_", None)   # None: every page fits its own engine (older code)
    log.write(f"FITS {panel._refitter.runs if team is None else team.fits_} "
              f"{-1 if team is None else team.adopted_}\n")
    log.write(f"END {done} {errors} {time.process_time() - cpu0:.3f}\n")
    log.close()
    os._exit(0)   # skip atexit: a finished page's claims are all consumed anyway


def thread_cpu_meter() -> dict[str, float]:
    """CPU seconds of this process's background work by kind (the Background's name: queue refit,
    claims, saving), measured with each worker thread's own clock; the caller adds the main thread's."""
    from dcai_widgets.widgets.threads import Background

    spent: dict[str, float] = {}
    run_once = Background._run_once

    def timed(self, job):
        t0 = time.thread_time()
        try:
            return run_once(self, job)
        finally:
            spent[self.name] = spent.get(self.name, 0.0) + time.thread_time() - t0

    Background._run_once = timed
    return spent


def keypress_split(panel) -> dict[str, float]:
    """Seconds of the current keypress spent writing the label, waiting for a claim under way, and
    asking for the next claim / refit (each a wrapped method of this page's panel)."""
    spent: dict[str, float] = {}

    def timed(obj, name: str, key: str) -> None:
        fn = getattr(obj, name, None)
        if fn is None:   # the solo panel claims nothing
            return

        def call(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[key] = spent.get(key, 0.0) + time.perf_counter() - t0
        setattr(obj, name, call)

    timed(panel.session, "label", "write")
    prefetch = getattr(panel, "_prefetch", None)
    timed(prefetch, "wait", "claim_wait")
    timed(panel, "_claim_more", "claim_now")
    timed(prefetch, "request", "claim_request")
    timed(panel._refitter, "request", "refit_request")
    timed(panel, "_refresh_counts", "counts")
    return spent


def round_trip_meter() -> dict[str, int]:
    """Round trips to PostgreSQL (waits for the server) by thread kind. Outside a pipeline each
    ``execute``, ``executemany`` (psycopg sends its rows in one pipeline) and transaction command
    (BEGIN, COMMIT, ROLLBACK) is one. In a pipeline (psycopg 3's pipeline mode) statements go out
    without waiting; a fetch whose result has not come back, an explicit sync and the pipeline's end
    are one each. New connections are counted apart, under "connect". SQLite stores count nothing."""
    import contextlib
    import threading

    counts: dict[str, int] = {}
    try:
        import psycopg
    except ImportError:
        return counts

    def note() -> None:
        name = threading.current_thread().name
        k = ("keypress (main thread)" if name == "MainThread"
             else "heartbeat" if name.startswith("dcai-claims-") else name)
        counts[k] = counts.get(k, 0) + 1

    def unpiped(fn, conn_of):
        def call(self, *args, **kwargs):
            if conn_of(self)._pipeline is None:
                note()
            return fn(self, *args, **kwargs)
        return call

    def fetch(fn):
        def call(self):
            if self._conn._pipeline and not self.pgresult and self._execmany_returning is not False:
                note()
            return fn(self)
        return call

    def sync(fn):
        def call(self):
            note()
            return fn(self)
        return call

    enter = psycopg.Connection.pipeline
    connect = psycopg.Connection.connect.__func__

    def connecting(cls, *args, **kwargs):
        counts["connect"] = counts.get("connect", 0) + 1
        return connect(cls, *args, **kwargs)

    @contextlib.contextmanager
    def pipeline(self):
        try:
            with enter(self) as p:
                yield p
        finally:
            note()   # its end: a Sync, and every result not read yet

    psycopg.Cursor.execute = unpiped(psycopg.Cursor.execute, lambda cur: cur._conn)
    psycopg.Cursor.executemany = unpiped(psycopg.Cursor.executemany, lambda cur: cur._conn)
    psycopg.Connection._exec_command = unpiped(psycopg.Connection._exec_command, lambda conn: conn)
    psycopg.Cursor._fetch_pipeline = fetch(psycopg.Cursor._fetch_pipeline)
    psycopg.Pipeline.sync = sync(psycopg.Pipeline.sync)
    psycopg.Connection.pipeline = pipeline
    psycopg.Connection.connect = classmethod(connecting)
    psycopg.connect = psycopg.Connection.connect
    return counts


def server_cpu_s(data_dir: Path) -> float:
    """CPU seconds used so far by a PostgreSQL server: the postmaster, the children it has reaped
    (backends that ended) and its live children (backends, checkpointer, WAL writer, autovacuum)."""
    tick = os.sysconf("SC_CLK_TCK")
    pid = int((data_dir / "postmaster.pid").read_text().split()[0])

    def fields(p: int) -> list[str]:
        try:
            return open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        except OSError:
            return []

    f = fields(pid)
    total = sum(int(x) for x in f[11:15]) if f else 0    # utime, stime, cutime, cstime
    for d in os.listdir("/proc"):
        if d.isdigit():
            g = fields(int(d))
            if len(g) > 13 and g[1] == str(pid):
                total += int(g[11]) + int(g[12])
    return total / tick


def memory(a: argparse.Namespace) -> None:
    """RSS of a process with the team App built (default LANCET queue) after its first fit."""
    import dcai_widgets as dw
    from dcai_widgets.widgets import App

    X, y = dataset(a.items)
    s = dw.Session.from_embeddings(X, CLASSES, y_true=y, store=a.store, cache_dir=a.cache)
    app = App(s, annotator="mem", team=True)
    app.label_panel._refitter.wait(300)   # the first fit (LANCET) has run
    rss = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmRSS"))
    print(json.dumps({"rss_mb": rss / 1024}))


# -- the load runs ---------------------------------------------------------------------------------
def spawn(store: str, name: str, out: Path, a: argparse.Namespace, extra: list[str] = ()) -> subprocess.Popen:
    cmd = [sys.executable, __file__, "--worker", "--store", store, "--name", name, "--out", str(out),
           "--items", str(a.items), "--cache", a.cache, *extra, *(["--split"] if a.split else [])]
    if "--pace" not in extra and a.pace:
        cmd += ["--pace", str(a.pace)]
    env = dict(os.environ)
    if getattr(a, "code", None):   # another checkout's dcai_widgets (an older commit, for before/after)
        env["PYTHONPATH"] = os.pathsep.join([a.code, *filter(None, [env.get("PYTHONPATH")])])
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(out / f"{name}.err", "a"),
                            env=env)


class LoadAverage:
    """Samples the 1-minute load average every second while a run goes (the box is shared)."""

    def __enter__(self) -> "LoadAverage":
        import threading

        self.samples: list[float] = [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            self.samples.append(os.getloadavg()[0])

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._t.join()

    def summary(self) -> dict:
        return {"load_avg_mean": round(float(np.mean(self.samples)), 1),
                "load_avg_max": round(float(np.max(self.samples)), 1)}


def prepare(store: str, a) -> None:
    """Create and bind the store once before the annotators open it, as `dcai-widgets serve` does (eight
    processes creating one new SQLite file at the same instant: 'database is locked' from PRAGMA
    journal_mode=WAL in some of them). With ``--before`` code, that code creates it (its schema)."""
    if getattr(a, "code", None) and not a.worker:
        env = dict(os.environ, PYTHONPATH=a.code)
        subprocess.run([sys.executable, __file__, "--prepare", "--worker", "--store", store, "--items", str(a.items),
                        "--cache", a.cache], cwd=ROOT, env=env, check=True)
        return
    import dcai_widgets as dw

    X, y = dataset(a.items)
    s = dw.Session.from_embeddings(X, CLASSES, y_true=y, store=store, cache_dir=a.cache)
    s.store.close()


def start(store: str, names: list[str], out: Path, a, extra: list[str] = ()) -> list[subprocess.Popen]:
    prepare(store, a)
    go = out / "go"
    go.unlink(missing_ok=True)
    for n in names:
        (out / f"{n}.ready").unlink(missing_ok=True)
    procs = [spawn(store, n, out, a, extra) for n in names]
    deadline = time.time() + 300
    while not all((out / f"{n}.ready").exists() for n in names):
        dead = [p for p in procs if p.poll() is not None]
        if dead or time.time() > deadline:
            raise RuntimeError(f"a worker failed to start; see {out}/*.err")
        time.sleep(0.1)
    go.touch()
    return procs


def acked_count(out: Path) -> int:
    return sum(f.read_text().count("\nA ") + f.read_text().startswith("A ") for f in out.glob("*.log"))


def read_logs(out: Path) -> tuple[dict[int, set], list[tuple[int, str, str]], list[float]]:
    shown: dict[int, set] = {}
    acked, lat = [], []
    cpu = [0.0, 0]
    fits, by, trips = [0, 0], {}, {}
    for f in out.glob("*.log"):
        name = f.stem
        for line in f.read_text().splitlines():
            p = line.split()
            if p and p[0] == "S":
                shown.setdefault(int(p[1]), set()).add(name)
            elif p and p[0] == "A" and len(p) == 4:
                acked.append((int(p[1]), name, p[2]))
                lat.append(float(p[3]))
            elif p and p[0] == "FITS" and len(p) == 3:
                fits[0] += int(p[1])
                fits[1] += max(0, int(p[2]))
            elif p and p[0] == "CPU":
                for k, v in json.loads(line[4:]).items():
                    by[k] = by.get(k, 0.0) + float(v)
            elif p and p[0] == "RT":
                for k, v in json.loads(line[3:]).items():
                    trips[k] = trips.get(k, 0) + int(v)
            elif p and p[0] == "END" and len(p) == 4:
                cpu[0] += float(p[3])
                cpu[1] += int(p[1])
    read_logs.cpu_ms_per_label = 1000 * cpu[0] / cpu[1] if cpu[1] else None
    read_logs.fits = fits
    read_logs.cpu_by = {k: round(1000 * v / cpu[1], 2) for k, v in by.items()} if cpu[1] else {}
    read_logs.connects = round(trips.pop("connect", 0) / cpu[1], 3) if cpu[1] and trips else None
    read_logs.trips = {k: round(v / cpu[1], 2) for k, v in sorted(trips.items())} if cpu[1] and trips else {}
    return shown, acked, lat


def check(store_url: str, out: Path) -> dict:
    """Compare the annotators' logs with the store: lost, duplicated, duplicate claims, latency."""
    from dcai_widgets.store import open_store

    st = open_store(store_url)
    ev = st.events(("human",))
    st.close()
    live = set(zip(ev["id"].astype(int), ev["annotator"], ev["label"]))
    shown, acked, lat = read_logs(out)
    per_item = ev.groupby("id")["annotator"].nunique()
    return dict(labels=int(len(ev)), items_labeled=int(ev["id"].nunique()), acked=len(acked),
                lost=sum(1 for r in acked if r not in live), duplicated=int((per_item > 1).sum()),
                duplicate_claims=sum(1 for v in shown.values() if len(v) > 1),
                p50_ms=float(np.percentile(lat, 50)) if lat else None,
                p95_ms=float(np.percentile(lat, 95)) if lat else None,
                cpu_ms_per_label=read_logs.cpu_ms_per_label, cpu_ms_per_label_by=read_logs.cpu_by,
                engine_fits=read_logs.fits[0], fits_adopted=read_logs.fits[1],
                round_trips_per_label=round(sum(read_logs.trips.values()), 2) if read_logs.trips else None,
                round_trips_per_label_by=read_logs.trips, connections_per_label=read_logs.connects,
                code=sorted({f.read_text() for f in out.glob("*.code")}),
                label_order=[int(i) for i in ev.sort_values("seq", kind="stable")["id"]])


def wait_all(procs: list[subprocess.Popen], timeout: float) -> None:
    end = time.time() + timeout
    for p in procs:
        try:
            p.wait(max(1.0, end - time.time()))
        except subprocess.TimeoutExpired:
            p.kill()


def load_run(store: str, a, tag: str) -> dict:
    out = Path(tempfile.mkdtemp(prefix=f"team-{tag}-"))
    names = [f"w{k}" for k in range(a.annotators)]
    procs = start(store, names, out, a)
    t0 = time.perf_counter()
    server = ServerCpu(store, a)
    with LoadAverage() as load:
        wait_all(procs, a.timeout)
    wall = time.perf_counter() - t0
    server_s = server.spent()
    r = check(store, out)
    r.update(labels_per_s=r["labels"] / wall, wall_s=wall, annotators=a.annotators, **load.summary())
    r.update(server.per_label(server_s, r["acked"]))
    order = r.pop("label_order")
    if a.staleness != "none":   # the team's labels in the order given, as a learning curve (team_staleness)
        r["team_curve"] = team_staleness.team_curve(order, dataset, a.items)
        r["labels_per_engine_fit"] = round(r["labels"] / max(1, r["engine_fits"]), 1)
    print(f"[{tag}] {r}", flush=True)
    return r


class ServerCpu:
    """The PostgreSQL server's CPU over a run (``server_cpu_s``), when the store is the benchmark's own
    server (``a.pg_data``: its data directory); nothing for SQLite."""

    def __init__(self, store: str, a) -> None:
        data = getattr(a, "pg_data", None)
        self.data = data if data is not None and str(store).startswith("postgresql") else None
        self.t0 = server_cpu_s(self.data) if self.data is not None else None

    def spent(self) -> float | None:
        return None if self.data is None else server_cpu_s(self.data) - self.t0

    @staticmethod
    def per_label(spent: float | None, labels: int) -> dict:
        if spent is None or not labels:
            return {}
        return {"server_cpu_ms_per_label": round(1000 * spent / labels, 3)}


def paced_run(store: str, a, tag: str) -> dict:
    """8 annotators at a person's pace (``--paced-think`` s between labels): the latency an expert
    sees while the others label too, rather than the stress of everyone pressing flat out."""
    out = Path(tempfile.mkdtemp(prefix=f"team-{tag}-paced-"))
    names = [f"w{k}" for k in range(a.annotators)]
    procs = start(store, names, out, a, ["--pace", str(a.paced_think), "--max",
                                         str(max(1, a.paced_labels // a.annotators))])
    server = ServerCpu(store, a)
    with LoadAverage() as load:
        wait_all(procs, a.timeout)
    server_s = server.spent()
    r = check(store, out)
    r.update(server.per_label(server_s, r["acked"]))
    r.pop("label_order")
    print(f"[{tag} paced] {r}", flush=True)
    stalled = r["acked"] < a.annotators * max(1, a.paced_labels // a.annotators)
    return dict(p95_paced_ms=r["p95_ms"], p50_paced_ms=r["p50_ms"], lost_paced=r["lost"],
                duplicate_claims_paced=r["duplicate_claims"], paced_think_s=a.paced_think,
                paced_acked=r["acked"], paced_stalled=bool(stalled),
                cpu_ms_per_label_paced=r["cpu_ms_per_label"],
                server_cpu_ms_per_label_paced=r.get("server_cpu_ms_per_label"),
                **{k + "_paced": v for k, v in load.summary().items()})


def fault_run(store: str, a, tag: str, kill, restart) -> dict:
    """Label, SIGKILL mid-load (``kill``), ``restart``, label ``--fault-after`` more each; count losses."""
    out = Path(tempfile.mkdtemp(prefix=f"team-{tag}-fault-"))
    names = [f"w{k}" for k in range(a.annotators)]
    procs = start(store, names, out, a)
    while acked_count(out) < a.kill_at and any(p.poll() is None for p in procs):
        time.sleep(0.05)
    before = acked_count(out)
    kill(procs)
    time.sleep(0.5)
    restart()
    extra = ["--max", str(a.fault_after)]
    if not kill_is_server(kill):
        procs = start(store, names, out, a, extra)   # the same annotators reopen their pages
    wait_all(procs, a.timeout)
    r = check(store, out)
    r.pop("label_order")
    print(f"[{tag} fault] acked before kill {before}; {r}", flush=True)
    return dict(lost_after_kill=r["lost"], acked_before_kill=before, acked_total=r["acked"],
                duplicate_claims_fault=r["duplicate_claims"], duplicated_fault=r["duplicated"])


def kill_is_server(fn) -> bool:
    return getattr(fn, "server", False)


def kill_workers(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        p.send_signal(signal.SIGKILL)
    for p in procs:
        p.wait()


def pg_kill(server):
    """SIGKILL the postmaster and every server process (a crashed database host)."""
    def kill(_procs) -> None:
        pid = int((server.data / "postmaster.pid").read_text().split()[0])
        kids = [int(d) for d in os.listdir("/proc") if d.isdigit() and _ppid(int(d)) == pid]
        for p in [pid, *kids]:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.time() + 10
        while time.time() < deadline and any(_alive(p) for p in [pid, *kids]):
            time.sleep(0.1)
        # the dead postmaster may stay a zombie where nothing reaps orphans (a container's PID 1), and
        # its PID in postmaster.pid would then block the restart: remove the stale lock file, as an
        # operator does after checking that the server is gone
        (server.data / "postmaster.pid").unlink(missing_ok=True)
        for f in server.root.glob(f".s.PGSQL.{server.port}*"):   # the socket and its lock file
            f.unlink(missing_ok=True)
    kill.server = True
    return kill


def _alive(pid: int) -> bool:
    """Running (not gone, not a zombie)."""
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _ppid(pid: int) -> int:
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def pg_fault_run(server, a) -> dict:
    """Workers keep running; the server is killed and restarted under them (they retry)."""
    url = server.new_database()
    out = Path(tempfile.mkdtemp(prefix="team-pg-fault-"))
    names = [f"w{k}" for k in range(a.annotators)]
    procs = start(url, names, out, a, ["--max", str(a.kill_at // a.annotators + a.fault_after)])
    while acked_count(out) < a.kill_at and any(p.poll() is None for p in procs):
        time.sleep(0.05)
    before = acked_count(out)
    try:
        pg_kill(server)(procs)
        server.start()
        wait_all(procs, a.timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    r = check(url, out)
    r.pop("label_order")
    print(f"[postgresql fault] acked before kill {before}; {r}", flush=True)
    return dict(lost_after_kill=r["lost"], acked_before_kill=before, acked_total=r["acked"],
                duplicate_claims_fault=r["duplicate_claims"], duplicated_fault=r["duplicated"])


def measure_memory(store: str, a) -> float:
    r = subprocess.run([sys.executable, __file__, "--memory", "--store", store, "--items", str(a.items),
                        "--cache", a.cache], cwd=ROOT, capture_output=True, text=True, timeout=600)
    if r.returncode != 0:
        raise RuntimeError(f"memory run failed: {r.stderr[-2000:]}")
    return float(json.loads(r.stdout.strip().splitlines()[-1])["rss_mb"])


def flat_and_paced(store_kind: str, new_store, a, tag: str) -> dict:
    """The flat-out load run and the paced run on fresh stores of one kind; ``new_store()`` makes one."""
    r = load_run(new_store(), a, tag)
    pr = paced_run(new_store(), a, tag)
    keep = ("labels_per_s", "p95_ms", "p50_ms", "cpu_ms_per_label", "cpu_ms_per_label_by", "server_cpu_ms_per_label",
            "round_trips_per_label", "round_trips_per_label_by", "connections_per_label", "lost", "duplicated",
            "duplicate_claims", "labels", "wall_s", "engine_fits", "fits_adopted", "labels_per_engine_fit", "team_curve",
            "load_avg_mean", "load_avg_max")
    return {**{k: r[k] for k in keep if k in r}, **pr}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--annotators", type=int, default=8)
    ap.add_argument("--kill-at", type=int, default=160, help="fault runs: acknowledged labels before the kill")
    ap.add_argument("--fault-after", type=int, default=15, help="fault runs: labels per annotator after restart")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--stores", default="sqlite,postgresql")
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--memory", action="store_true")
    ap.add_argument("--solo", action="store_true")
    ap.add_argument("--store")
    ap.add_argument("--name")
    ap.add_argument("--out")
    ap.add_argument("--max", type=int, default=0)
    ap.add_argument("--cache", default=None)
    ap.add_argument("--pace", type=float, default=0.0, help="seconds between an annotator's labels (0: flat out)")
    ap.add_argument("--paced-labels", type=int, default=160,
                    help="paced run: labels in all (each annotator waits --paced-think s between labels)")
    ap.add_argument("--paced-think", type=float, default=1.0)
    ap.add_argument("--before", default=None,
                    help="a checkout of an older commit (e.g. `git worktree add /tmp/team_old <commit>`): its "
                         "dcai_widgets runs the same flat-out and paced runs first, reported under 'before'")
    ap.add_argument("--after", default=None, help="a checkout whose dcai_widgets is measured as the current code "
                    "(default: this one's)")
    ap.add_argument("--no-fault", action="store_true", help="skip the SIGKILL runs and the memory figure")
    ap.add_argument("--prepare", action="store_true")
    ap.add_argument("--split", action="store_true", help="workers log where each keypress's time went (D lines)")
    ap.add_argument("--staleness", choices=("none", "blobs", "all"), default="blobs",
                    help="learning curves of the label orders (team_staleness.py): the team's runs and one "
                         "annotator refitting every 5/50/400 labels on the load's blobs; 'all' adds scikit-learn's "
                         "digits over --staleness-seeds splits (a few minutes)")
    ap.add_argument("--staleness-seeds", type=int, default=3)
    a = ap.parse_args()
    if a.prepare:
        return prepare(a.store, a)
    if a.worker:
        return worker(a)
    if a.memory:
        return memory(a)
    tmp = Path(tempfile.mkdtemp(prefix="team-load-"))
    a.cache = a.cache or str(tmp / "cache")
    a.code = None
    X, y = dataset(a.items)
    import dcai_widgets as dw

    dw.Session.from_embeddings(X, CLASSES, y_true=y, store=tmp / "warm.db", cache_dir=a.cache)  # warm cache
    results: dict = {}
    counter = iter(range(10**6))

    # baseline: one annotator, solo panel, no claims, 200 labels
    out = tmp / "solo"
    out.mkdir()
    with LoadAverage() as load:
        procs = start(str(tmp / "solo.db"), ["solo"], out, a, ["--solo", "--max", "200"])
        wait_all(procs, a.timeout)
    b = check(str(tmp / "solo.db"), out)
    b.pop("label_order")
    results["baseline_solo"] = dict(p95_ms=b["p95_ms"], p50_ms=b["p50_ms"], labels=b["labels"],
                                    cpu_ms_per_label=b["cpu_ms_per_label"], **load.summary())
    print(f"[solo] {b}", flush=True)

    server = None
    if "postgresql" in a.stores:
        sys.path.insert(0, str(ROOT / "tests"))
        from conftest import PG_BIN, PgServer

        if not (PG_BIN / "pg_ctl").exists():
            results["postgresql"] = {"skipped": f"no PostgreSQL binaries in {PG_BIN}"}
        else:
            server = PgServer(Path(tempfile.mkdtemp(prefix="team-pg-")), durable=True)  # fsync on, as deployed
            a.pg_data = server.data
    makers = {"sqlite": lambda: str(tmp / f"s{next(counter)}.db")}
    if server is not None:
        makers["postgresql"] = server.new_database
    try:
        for kind, new_store in makers.items():
            if kind not in a.stores:
                continue
            res: dict = {}
            if a.before:   # the older code first, in the same run, on the same box
                a.code = str(Path(a.before).resolve())
                res["before"] = flat_and_paced(kind, new_store, a, f"{kind} before")
            a.code = str(Path(a.after).resolve()) if a.after else None
            res.update(flat_and_paced(kind, new_store, a, kind))
            if not a.no_fault:
                if kind == "sqlite":
                    res.update(fault_run(new_store(), a, kind, kill_workers, lambda: None),
                               fault=f"SIGKILL of all {a.annotators} annotator processes, restarted")
                else:
                    res.update(pg_fault_run(server, a), fault="SIGKILL of the PostgreSQL server, restarted")
                res["mb_per_page"] = measure_memory(new_store(), a)
            results[kind] = res
    finally:
        if server is not None:
            server.stop("immediate")
    if a.staleness != "none":
        results["staleness"] = staleness_references(a)
    print(json.dumps(results))


def staleness_references(a) -> dict:
    """One annotator refitting every 5 / 50 / 400 labels and a random order, on the blobs (the load's
    items) and, with ``--staleness all``, on digits (mean over seeds of the pool/held-out split)."""
    out = {"blobs": team_staleness.reference_curves(*team_staleness.blobs(dataset, a.items), CLASSES, a.cache)}
    if a.staleness == "all":
        runs = [team_staleness.reference_curves(*team_staleness.digits(seed=seed), [str(c) for c in range(10)],
                                                a.cache) for seed in range(a.staleness_seeds)]
        mean = {k: v for k, v in runs[0].items() if not isinstance(v, dict)}
        for name in (k for k, v in runs[0].items() if isinstance(v, dict)):
            mean[name] = {k: (None if any(r[name][k] is None for r in runs)
                              else round(float(np.mean([r[name][k] for r in runs])), 4)) for k in runs[0][name]}
        out[f"digits_mean_of_{a.staleness_seeds}_splits"] = mean
        out["digits_by_split"] = runs
    print(f"[staleness] {out}", flush=True)
    return out


if __name__ == "__main__":
    main()
