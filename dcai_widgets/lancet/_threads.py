"""Torch thread count for LANCET's small networks (1 thread: fastest measured on a shared 2-core box)."""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def torch_threads(n: int | None = 1):
    """Run torch with ``n`` threads inside the block, then restore (None leaves torch's setting)."""
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)
