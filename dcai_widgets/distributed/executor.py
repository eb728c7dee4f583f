"""Where the heavy steps run: in this process (default) or on a Ray cluster (issue 18, "past one machine").

An :class:`Executor` maps a *worker* over a list of small, picklable *tasks*. The worker is built once
per process that runs tasks (``make(*args)``), so a model, a FAISS index or a dataset is loaded once per
actor, not once per task -- the Ray Data pattern of ``map_batches`` with a callable class held by an
actor pool (Moritz et al., "Ray: A Distributed Framework for Emerging AI Applications", OSDI 2018; Ray
Data's streaming executor). Large read-only inputs travel once, by :meth:`Executor.share`.

``LocalExecutor`` builds one worker and runs the tasks in order, in this process: the results are the
same objects the single-process code computes, so the distributed path is checked against it task by
task. ``RayExecutor`` imports :mod:`ray` only when it is used; it connects to the cluster named by
``address`` (``"ray://host:10001"``, ``"auto"``, or ``$RAY_ADDRESS``) or, with none, starts a local one
that it also stops in :meth:`RayExecutor.close`.
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["Executor", "LocalExecutor", "RayExecutor", "Shared", "get_executor", "is_local"]


@runtime_checkable
class Shared(Protocol):
    """A handle to a large read-only object that workers fetch once (``get()``)."""

    def get(self) -> Any: ...


@runtime_checkable
class Executor(Protocol):
    """Runs ``make(*args)`` once per worker process and maps it over ``tasks``.

    ``map`` yields ``(task_index, result)`` pairs, in completion order (not necessarily task order); every
    task yields exactly once, or the call raises the first task's error.
    """

    name: str

    def share(self, obj: Any) -> Shared: ...

    def map(self, make: Callable[..., Callable[[Any], Any]], args: Sequence[Any],
            tasks: Sequence[Any]) -> Iterator[tuple[int, Any]]: ...


class _Here:
    """A shared object that is already in this process."""

    def __init__(self, obj: Any):
        self.obj = obj

    def get(self) -> Any:
        return self.obj


class LocalExecutor:
    """Everything in this process, in task order: the single-process path (the default)."""

    name = "local"

    def share(self, obj: Any) -> Shared:
        return _Here(obj)

    def map(self, make, args, tasks) -> Iterator[tuple[int, Any]]:
        worker = make(*args)
        for i, task in enumerate(tasks):
            yield i, worker(task)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return "LocalExecutor()"


class _InStore:
    """A shared object held in Ray's object store (zero-copy reads of numpy arrays on the same node)."""

    def __init__(self, ref: Any):
        self.ref = ref

    def get(self) -> Any:
        import ray

        return ray.get(self.ref)


class _ActorWorker:
    """What each Ray Data actor holds: the worker built from ``make(*args)``; runs the tasks of a batch.

    Tasks and results cross as pickled bytes (protocol 5), so any picklable value (tensors, tuples of
    arrays) can be returned, and Arrow never has to guess a column type.
    """

    def __init__(self, make: Callable[..., Any], args: Sequence[Any], threads: int):
        _limit_threads(threads)
        self.fn = make(*args)

    def __call__(self, batch: dict) -> dict:
        import numpy as np

        out = [pickle.dumps(self.fn(pickle.loads(t)), protocol=5) for t in batch["task"]]
        return {"i": np.asarray(batch["i"]), "out": np.array(out, dtype=object)}


def _children() -> set[int]:
    """Process ids of this process's descendants (psutil comes with Ray)."""
    import psutil

    return {p.pid for p in psutil.Process().children(recursive=True)}


def _stop(pids: set[int]) -> None:
    """Terminate these processes (ours: started by a failed ``ray.init``), then kill what is left."""
    import psutil

    procs = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            p.terminate()
            procs.append(p)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=5)
    for p in alive:
        try:
            p.kill()
        except psutil.Error:
            pass


def _limit_threads(threads: int) -> None:
    """Give each actor only its CPU share of BLAS/OpenMP threads, so actors do not oversubscribe cores."""
    try:
        import torch

        torch.set_num_threads(max(1, int(threads)))
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    try:
        import faiss

        faiss.omp_set_num_threads(max(1, int(threads)))
    except ImportError:  # pragma: no cover - faiss is a dependency
        pass


class RayExecutor:
    """Runs the tasks on a Ray cluster with Ray Data ``map_batches`` over a fixed pool of actors.

    ``address``: ``None`` (``$RAY_ADDRESS`` if set, else start a local cluster), ``"auto"`` (an existing
    local cluster) or ``"ray://host:port"`` (Ray Client). ``workers``: actors in the pool (default: the
    cluster's CPUs / ``cpus_per_worker``). ``init``: extra ``ray.init`` keywords for a cluster this
    executor starts (e.g. ``num_cpus``, ``object_store_memory``); starting one is tried
    ``start_attempts`` times (Ray 2.x aborts a node whose agents take over ~15 s to start, as on a busy
    machine). If Ray is already initialised in this process, that connection is used and left open.
    """

    name = "ray"

    def __init__(self, address: str | None = None, workers: int | None = None, cpus_per_worker: float = 1.0,
                 init: dict | None = None, start_attempts: int = 3):
        if address is not None and not isinstance(address, str):
            raise TypeError(f"address must be a string such as 'ray://host:10001' or 'auto', got {type(address).__name__}")
        if workers is not None and int(workers) < 1:
            raise ValueError(f"workers must be at least 1, got {workers}")
        if cpus_per_worker <= 0:
            raise ValueError(f"cpus_per_worker must be positive, got {cpus_per_worker}")
        self.address, self.workers, self.cpus_per_worker = address, workers, float(cpus_per_worker)
        self.init = dict(init or {})
        self.start_attempts = max(1, int(start_attempts))
        self._started = False

    # -- connection ------------------------------------------------------------------------------
    def _ray(self):
        try:
            import ray
        except ImportError as e:
            raise ImportError("executor='ray' needs Ray: pip install 'ray[data]'") from e
        if not ray.is_initialized():
            kw = {"include_dashboard": False, "log_to_driver": False, "logging_level": "warning"}
            kw.update(self.init)
            address = self.address or os.environ.get("RAY_ADDRESS")
            for attempt in range(self.start_attempts if address is None else 1):
                before = _children()
                try:
                    ray.init(address=address, **kw)
                    break
                except Exception as e:
                    # a local node whose Python agents start slowly (a busy machine, a cold page cache)
                    # aborts after a fixed wait; the next attempt finds the imports cached
                    ray.shutdown()
                    if address is None:
                        _stop(_children() - before)   # the failed node's processes (its GCS outlives it)
                    if attempt + 1 >= self.start_attempts or "timed out during startup" not in str(e):
                        raise
            self._started = address is None
            import ray.data

            ray.data.DataContext.get_current().enable_progress_bars = False
        return ray

    def n_workers(self) -> int:
        """Actors in the pool: ``workers``, or as many as the cluster's CPUs allow (connects first)."""
        ray = self._ray()
        if self.workers is not None:
            return int(self.workers)
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        return max(1, int(cpus // self.cpus_per_worker))

    def close(self) -> None:
        """Stop the local cluster this executor started (a cluster it only connected to keeps running)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- work ------------------------------------------------------------------------------------
    def share(self, obj: Any) -> Shared:
        return _InStore(self._ray().put(obj))

    def map(self, make, args, tasks) -> Iterator[tuple[int, Any]]:
        ray = self._ray()
        import numpy as np
        from ray.data import ActorPoolStrategy

        tasks = list(tasks)
        if not tasks:
            return
        n = min(self.n_workers(), len(tasks))
        items = [{"i": i, "task": pickle.dumps(t, protocol=5)} for i, t in enumerate(tasks)]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        ds = ds.map_batches(_ActorWorker, fn_constructor_args=(make, tuple(args), max(1, int(self.cpus_per_worker))),
                            batch_size=1, batch_format="numpy", num_cpus=self.cpus_per_worker,
                            compute=ActorPoolStrategy(size=n))
        for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
            for i, out in zip(np.asarray(batch["i"]).tolist(), batch["out"]):
                yield int(i), pickle.loads(out)

    def __repr__(self) -> str:
        return f"RayExecutor(address={self.address!r}, workers={self.workers!r})"


def get_executor(executor: Any = None) -> Any:
    """Turn the user's ``executor=`` into an Executor: None/"local" -> in-process; "ray" -> Ray (local
    cluster or ``$RAY_ADDRESS``); "ray://host:port" or "auto" -> that Ray cluster; an Executor -> itself."""
    if executor is None or (isinstance(executor, str) and executor == "local"):
        return LocalExecutor()
    if isinstance(executor, str):
        if executor == "ray":
            return RayExecutor()
        if executor.startswith("ray://") or executor == "auto":
            return RayExecutor(address=executor)
        raise ValueError(f"unknown executor {executor!r}; use 'local', 'ray', 'auto' or a 'ray://host:port' address")
    if isinstance(executor, Executor):
        return executor
    raise TypeError(f"executor must be None, 'local', 'ray', a 'ray://' address or an Executor, "
                    f"not {type(executor).__name__}")


def is_local(executor: Any) -> bool:
    """True when ``executor`` means the in-process path (so callers keep their own code path)."""
    return executor is None or executor == "local" or isinstance(executor, LocalExecutor)
