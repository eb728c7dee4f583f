"""`python -m dcai_widgets.serve NOTEBOOK [voila options]`: the guarded server in single-user mode.

`dcai-widgets serve` runs the same server in its own process after its checks; this entry exists for
the `--dry-run` command line and for serving another notebook behind the same gate."""
import sys

from .launcher import ServeOptions, run

if __name__ == "__main__":
    ip = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--Voila.ip=")), "127.0.0.1")
    run(ServeOptions(ip=ip), sys.argv[1:])
