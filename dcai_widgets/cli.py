"""`dcai-widgets`: `serve` the labeling app with Voila, `revoke` a team member's link, `backup` a store.

`serve` checks everything it can before the server starts, so that a mistake is a clear message in the
terminal and a non-zero exit, never a pink traceback page: the data is opened and the store bound to it
(a store made for other data, a damaged or read-only store, an unreadable file), the port is tried
(Voila would otherwise move to the next free port while this printed the old one), and a non-loopback
address without team links needs `--insecure`. With `--annotators` or `--team` (or a store that already
has registered members) it serves in team mode: one secret link per member is printed as `NAME URL`, and
every page, API call and websocket needs a valid token (see `dcai_widgets.serve`).
"""
from __future__ import annotations

import argparse
import errno
import ipaddress
import os
import socket
import sys
import warnings
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from .serve.identity import NAME as _NAME
from .serve.identity import (
    Link,
    check_name,
    default_key_path,
    is_url,
    issue_links,
    live_links,
    live_members,
    load_key,
    load_team,
    open_label_store,
    parse_annotators,
    revoke,
)


def app_notebook() -> Path:
    """Path of the packaged notebook Voila serves (dcai_widgets/notebooks/app.ipynb)."""
    return Path(str(resources.files("dcai_widgets") / "notebooks" / "app.ipynb"))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dcai-widgets", description="dcai-widgets: label data in the browser")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the labeling app with Voila")
    s.add_argument("--data", default="digits",
                   help="'digits' (the bundled demo) or a path: .npz, MNIST idx folder, CSV/Parquet, image folder")
    s.add_argument("--store", default="labels.db",
                   help="label store: a SQLite file (created if missing) or a postgresql:// URL")
    s.add_argument("--port", type=int, default=8866, help="port to listen on (default 8866)")
    s.add_argument("--ip", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--annotator", default=None,
                   help="single-user mode: who labels (the page's ?annotator= overrides it)")
    s.add_argument("--annotators", default=None, metavar="A,B,C",
                   help="team mode: one secret link per name (NAME or NAME:lead), printed before serving")
    s.add_argument("--team", default=None, metavar="TEAM.toml",
                   help='team mode from a TOML file with an [annotators] table: ada = "lead", bo = "annotator"')
    s.add_argument("--revoke", action="append", default=[], metavar="NAME",
                   help="revoke NAME's link before serving (repeatable)")
    s.add_argument("--key-file", default=None,
                   help="secret the links are derived from (default: <store>.key beside a SQLite store)")
    s.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="a host name people use to reach this server (repeatable); others are refused")
    s.add_argument("--insecure", action="store_true",
                   help="allow a non-loopback --ip without team links (anyone who reaches the port can label)")
    s.add_argument("--max-kernels", type=int, default=8,
                   help="most open pages at once (each runs a kernel of ~0.5 GB; default 8)")
    s.add_argument("--max-pages-per-person", type=int, default=2,
                   help="most open pages one team link may hold (so one person cannot fill the server; "
                        "0: no limit; default 2)")
    s.add_argument("--kernel-timeout", type=int, default=60,
                   help="seconds after which the kernel of a closed page is shut down (default 60)")
    s.add_argument("--overlap", default=None, metavar="F|N",
                   help="team mode: a fraction of items (0 < F < 1) shown to two annotators each, or N (an "
                        "integer >= 2) annotators for every item; default: each item to one person")
    s.add_argument("--guidelines", default=None, metavar="PATH",
                   help="markdown file with the labeling guidelines shown at the top of the app")
    s.add_argument("--image-size", type=int, default=None, metavar="PX",
                   help="a folder of images of several sizes: resize all to PX x PX (default: the most "
                        "common size, at most 128)")
    s.add_argument("--no-browser", action="store_true", help="do not open a browser")
    s.add_argument("--dry-run", action="store_true",
                   help="check the options, data and store, print the server command, then exit")
    r = sub.add_parser("revoke", help="revoke team members' links (their labels stay)")
    r.add_argument("names", nargs="+", metavar="NAME")
    r.add_argument("--store", required=True, help="label store of the team")
    b = sub.add_parser("backup", help="copy a label store safely while it is in use")
    b.add_argument("src", help="label store to copy (SQLite file or postgresql:// URL)")
    b.add_argument("dest", help="the copy (a new SQLite file)")
    return p


def _loopback(ip: str) -> bool:
    if ip == "localhost":
        return True
    try:
        return ipaddress.ip_address(ip).is_loopback
    except ValueError:
        return False


def _members(args: argparse.Namespace):
    if args.annotators and args.team:
        raise ValueError("give either --annotators or --team, not both")
    if args.annotators is not None:
        return parse_annotators(args.annotators)
    if args.team is not None:
        return load_team(args.team)
    return None


def _overlap(text: str) -> str:
    """--overlap as the kernels read it (DCAI_TEAM_OVERLAP): a fraction in (0, 1) or a count >= 1."""
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"--overlap {text!r} is not a number; give a fraction such as 0.1 or a count such "
                         "as 2") from None
    if value.is_integer() and value >= 1:
        return str(int(value))
    if not 0 <= value < 1:
        raise ValueError(f"--overlap {text!r} must be a fraction in [0, 1) or a whole number of annotators >= 1")
    return repr(value)


def serve_command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """Validate the serve options (no I/O beyond looking at paths) and return (server argv, environment).
    Raises ValueError with a message naming the problem."""
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, got {args.port}")
    if args.max_kernels < 1:
        raise ValueError(f"--max-kernels must be at least 1, got {args.max_kernels}")
    if args.max_pages_per_person < 0:
        raise ValueError(f"--max-pages-per-person must be 0 (no limit) or more, got {args.max_pages_per_person}")
    if args.kernel_timeout < 5:
        raise ValueError(f"--kernel-timeout must be at least 5 seconds, got {args.kernel_timeout}")
    data = args.data
    if data != "digits":
        path = Path(data).expanduser()
        if not path.exists():
            raise ValueError(f"--data {data!r} does not exist; give 'digits' or the path of your data")
        if not os.access(path, os.R_OK):
            raise ValueError(f"--data {data!r} cannot be read (permission denied)")
        data = str(path.resolve())
    store = args.store
    if not is_url(store):
        sp = Path(store).expanduser()
        if sp.is_dir():
            raise ValueError(f"--store {args.store!r} is a folder; give a file path such as labels.db")
        if not sp.resolve().parent.is_dir():
            raise ValueError(f"--store folder {str(sp.parent)!r} does not exist; create it first")
        store = str(sp.resolve())
    if args.annotator is not None and not _NAME.match(args.annotator):
        raise ValueError(f"--annotator {args.annotator!r} is not allowed; use up to 64 letters, digits, "
                         "spaces or . _ - @ +")
    for n in args.revoke:
        check_name(n, "--revoke name")
    for h in args.allow_host:
        if not h or any(c in h for c in "/ \t<>\"'") or h.startswith("-"):
            raise ValueError(f"--allow-host {h!r} is not a host name")
    members = _members(args)  # validates names and roles
    if members is not None and args.annotator:
        raise ValueError("--annotator is for single-user mode; with --annotators/--team each link names its person")
    env = {"DCAI_DATA": data, "DCAI_STORE": store}
    if args.image_size is not None:
        if not 8 <= args.image_size <= 1024:
            raise ValueError(f"--image-size must be between 8 and 1024 pixels, got {args.image_size}")
        env["DCAI_IMAGE_SIZE"] = str(args.image_size)
    if args.annotator:
        env["DCAI_ANNOTATOR"] = args.annotator
    if args.guidelines is not None:
        g = Path(args.guidelines).expanduser()
        if not g.is_file():
            raise ValueError(f"--guidelines {args.guidelines!r} is not a file; give a markdown file")
        try:
            g.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"--guidelines {args.guidelines!r} cannot be read as UTF-8 text: {e}") from None
        env["DCAI_GUIDELINES"] = str(g.resolve())
    if members is not None:
        env["DCAI_TEAM"] = "1"
    if args.overlap is not None:
        env["DCAI_TEAM_OVERLAP"] = _overlap(args.overlap)
    argv = [sys.executable, "-m", "dcai_widgets.serve", str(app_notebook()), f"--port={args.port}",
            f"--Voila.ip={args.ip}", "--Voila.port_retries=0", "--show_tracebacks=False", "--theme=light"]
    if args.no_browser or members is not None:  # a team server's front page needs a link: no browser
        argv.append("--no-browser")
    return argv, env


def check_port(ip: str, port: int) -> None:
    """ValueError with a clear message when (ip, port) cannot be bound (in use, or not allowed)."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Tornado does: TIME_WAIT is fine
        try:
            s.bind((ip, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ValueError(f"port {port} on {ip} is already in use (another server?); stop it or "
                                 "choose another --port") from None
            if e.errno == errno.EACCES:
                raise ValueError(f"no permission to listen on port {port}; choose a port above 1023") from None
            if e.errno == errno.EADDRNOTAVAIL:
                raise ValueError(f"--ip {ip} is not an address of this machine") from None
            raise ValueError(f"cannot listen on {ip}:{port}: {e.strerror or e}") from None


def check_data_and_store(data: str, store: str, keep: bool = True, image_size: int | None = None) -> None:
    """Open the data and bind the store to it, as the app will: a wrong format, an unreadable file, a
    store made for other data or a damaged store is a ValueError here instead of an error page. What
    opening did to the data (images resized to one size) is said on stderr. ``keep=False`` (--dry-run):
    a SQLite store this check created is removed again, so a dry run with the wrong --data does not
    leave a store that then refuses the right one ("belongs to another dataset")."""
    from .data.loaders import ImagesResizedWarning
    from .session import Session

    path = Path(store).expanduser()
    fresh = "://" not in str(store) and not path.exists()
    before = set(path.parent.glob(path.name + "*")) if fresh else set()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            session = Session.open(data, store=store, **({} if image_size is None else {"image_size": image_size}))
        except (OSError, ValueError, TypeError, KeyError, RuntimeError, ImportError) as e:
            msg = str(e) or type(e).__name__
            raise ValueError(f"could not open --data {data!r} with --store {store!r}: {msg}") from None
    session.store.close()
    for w in caught:
        if issubclass(w.category, ImagesResizedWarning):
            print(f"dcai-widgets: note: {w.message}", file=sys.stderr, flush=True)
    if fresh and not keep:   # the store file and its side files (-wal, -shm, the writers' -priority lock)
        for f in set(path.parent.glob(path.name + "*")) - before:
            f.unlink(missing_ok=True)


def team_links(store_spec: str, members, revoke_names: Sequence[str], key_file: str | None) -> list[Link]:
    """Register/revoke members in the store and return the links to print (empty: single-user mode)."""
    store = open_label_store(store_spec)
    try:
        for n in revoke_names:
            if not revoke(store, n):
                raise ValueError(f"--revoke {n!r}: nobody of that name is registered in {store_spec}")
        if members is None and not live_members(store):
            return []
        key = load_key(key_file or default_key_path(store_spec))
        return issue_links(store, key, members) if members is not None else live_links(store, key)
    finally:
        store.close()


def _live(store_spec: str):
    store = open_label_store(store_spec)
    try:
        return live_members(store)
    finally:
        store.close()


def _public_base(ip: str, port: int, allow_hosts: Sequence[str]) -> str:
    if allow_hosts:
        host = allow_hosts[0]
    elif ip in ("0.0.0.0", "::", ""):
        host = socket.getfqdn() or socket.gethostname()
    else:
        host = f"[{ip}]" if ":" in ip else ip
    return f"http://{host}:{port}/"


def _serve(args: argparse.Namespace) -> int:
    cmd, env = serve_command(args)
    if not args.dry_run:
        check_port(args.ip, args.port)
    check_data_and_store(env["DCAI_DATA"], env["DCAI_STORE"], keep=not args.dry_run, image_size=args.image_size)
    others: list[str] = []
    if args.dry_run:  # registers nobody
        links, team = [], "DCAI_TEAM" in env
    else:
        links = team_links(env["DCAI_STORE"], _members(args), args.revoke, args.key_file)
        team = bool(links)
        if team:
            others = sorted({m.name for m in _live(env["DCAI_STORE"])} - {x.name for x in links})
    if team:
        env["DCAI_TEAM"] = "1"
        env.pop("DCAI_ANNOTATOR", None)
        if "--no-browser" not in cmd:
            cmd.append("--no-browser")
    elif "DCAI_TEAM_OVERLAP" in env:
        raise ValueError("--overlap is for team mode; give --annotators or --team too")
    elif not _loopback(args.ip) and not args.insecure:
        raise ValueError(f"--ip {args.ip} lets other machines reach the app; give --annotators (secret "
                         "links) or, to let anyone who reaches the port label, --insecure")
    if args.dry_run:
        print(" ".join(f"{k}={v}" for k, v in env.items()), " ".join(cmd))
        return 0
    if not team and not _loopback(args.ip):
        print(f"dcai-widgets: WARNING: serving {args.ip} without links (--insecure): anyone who reaches "
              f"port {args.port} can label", file=sys.stderr, flush=True)
    base = _public_base(args.ip, args.port, args.allow_host)
    for link in links:
        print(f"{link.name} {link.url(base)}", flush=True)
    if others:
        print(f"dcai-widgets: also registered, with links that still work: {', '.join(others)} "
              "(dcai-widgets revoke NAME --store ... to end one)", file=sys.stderr, flush=True)
    print(f"dcai-widgets: serving {env['DCAI_DATA']} on {base if team else f'http://{args.ip}:{args.port}/'} "
          f"(labels in {env['DCAI_STORE']}; {'team mode: ' + str(len(links)) + ' links above' if team else 'single user'})",
          file=sys.stderr, flush=True)
    os.environ.update(env)  # the kernels inherit it
    os.environ.pop("DCAI_ANNOTATOR" if team else "DCAI_TEAM", None)  # nothing left over from the shell
    if "DCAI_GUIDELINES" not in env:
        os.environ.pop("DCAI_GUIDELINES", None)
    from .serve.launcher import ServeOptions, run

    run(ServeOptions(ip=args.ip, allow_hosts=tuple(args.allow_host), team=team, store=env["DCAI_STORE"],
                     max_kernels=args.max_kernels, max_per_person=args.max_pages_per_person,
                     cull_idle_s=args.kernel_timeout,
                     cull_interval_s=max(1, min(10, args.kernel_timeout // 4))), cmd[3:])
    return 0


def _revoke(args: argparse.Namespace) -> int:
    store = open_label_store(args.store)
    try:
        missing = [n for n in args.names if not revoke(store, n)]
    finally:
        store.close()
    for n in args.names:
        if n not in missing:
            print(f"revoked {n}")
    if missing:
        raise ValueError(f"nobody named {', '.join(map(repr, missing))} is registered in {args.store}")
    return 0


def _backup(args: argparse.Namespace) -> int:
    from .store import backup

    if not is_url(args.dest) and Path(args.dest).exists():
        raise ValueError(f"{args.dest!r} exists; give a new file for the copy")
    info = backup(args.src, args.dest)
    print(f"backed up {args.src} to {args.dest}" + (f" ({info})" if info else ""))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dcai-widgets` console script."""
    args = _parser().parse_args(argv)
    run = {"serve": _serve, "revoke": _revoke, "backup": _backup}[args.command]
    try:
        return run(args)
    except ValueError as e:
        print(f"dcai-widgets {args.command}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
