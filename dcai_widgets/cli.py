"""`dcai-widgets serve`: start Voila on the packaged app notebook with the data, store and annotator given."""
from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence
from importlib import resources
from pathlib import Path


_NAME = re.compile(r"^[\w.@+-][\w .@+-]{0,63}$")  # same rule as the app's ?annotator=


def app_notebook() -> Path:
    """Path of the packaged notebook Voila serves (dcai_widgets/notebooks/app.ipynb)."""
    return Path(str(resources.files("dcai_widgets") / "notebooks" / "app.ipynb"))


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dcai-widgets", description="dcai-widgets: label data in the browser")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("serve", help="serve the labeling app with Voila")
    s.add_argument("--data", default="digits",
                   help="'digits' (the bundled demo) or a path: .npz, MNIST idx folder, CSV/Parquet, image folder")
    s.add_argument("--store", default="labels.db", help="SQLite label store file (created if missing)")
    s.add_argument("--port", type=int, default=8866, help="port to listen on (default 8866)")
    s.add_argument("--ip", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    s.add_argument("--annotator", default=None, help="who labels (the page's ?annotator= overrides it)")
    s.add_argument("--no-browser", action="store_true", help="do not open a browser")
    s.add_argument("--dry-run", action="store_true", help="print the Voila command and environment, then exit")
    return p


def serve_command(args: argparse.Namespace) -> tuple[list[str], dict[str, str]]:
    """Validate the serve options and return (Voila argv, extra environment); raises ValueError on bad input."""
    if not 0 < args.port < 65536:
        raise ValueError(f"--port must be between 1 and 65535, got {args.port}")
    data = args.data
    if data != "digits":
        path = Path(data).expanduser()
        if not path.exists():
            raise ValueError(f"--data {data!r} does not exist; give 'digits' or the path of your data")
        data = str(path.resolve())
    store = Path(args.store).expanduser()
    if store.is_dir():
        raise ValueError(f"--store {args.store!r} is a folder; give a file path such as labels.db")
    if not store.resolve().parent.is_dir():
        raise ValueError(f"--store folder {str(store.parent)!r} does not exist; create it first")
    if args.annotator is not None and not _NAME.match(args.annotator):
        raise ValueError(f"--annotator {args.annotator!r} is not allowed; use up to 64 letters, digits, "
                         "spaces or . _ - @ +")
    env = {"DCAI_DATA": data, "DCAI_STORE": str(store.resolve())}
    if args.annotator:
        env["DCAI_ANNOTATOR"] = args.annotator
    argv = [sys.executable, "-m", "voila", str(app_notebook()), f"--port={args.port}",
            f"--Voila.ip={args.ip}", "--show_tracebacks=True", "--theme=light"]
    if args.no_browser:
        argv.append("--no-browser")
    return argv, env


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `dcai-widgets` console script."""
    args = _parser().parse_args(argv)
    if args.command == "serve":
        try:
            cmd, extra = serve_command(args)
        except ValueError as e:
            print(f"dcai-widgets serve: {e}", file=sys.stderr)
            return 2
        if args.dry_run:
            print(" ".join(f"{k}={v}" for k, v in extra.items()), " ".join(cmd))
            return 0
        print(f"dcai-widgets: serving {extra['DCAI_DATA']} on http://{args.ip}:{args.port}/ "
              f"(labels in {extra['DCAI_STORE']})", flush=True)
        os.execve(sys.executable, cmd, {**os.environ, **extra})  # Voila replaces this process
    return 0


if __name__ == "__main__":
    sys.exit(main())
