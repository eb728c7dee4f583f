"""Encoder input: kNN-graph merging, the translation-invariant image graph, the spectral view."""
import numpy as np

from dcai_widgets.lancet.features import _merge_neighbours, encoder_input, shift_knn_graph, spectral_view


def test_merge_neighbours_dedups_and_drops_self():
    I = np.array([[0, 2, 2, 1, 3]])
    D = np.array([[0.0, 5.0, 1.0, 2.0, 9.0]])
    ids, d = _merge_neighbours(I, D, 2)
    assert ids.tolist() == [[2, 1]] and d.tolist() == [[1.0, 2.0]]


def test_shift_graph_finds_shifted_copies():
    rng = np.random.default_rng(0)
    base = (rng.random((20, 12, 12)) > 0.7).astype(np.float32)
    shifted = np.zeros_like(base)
    shifted[:, :, 1:] = base[:, :, :-1]  # the same pictures moved one pixel right
    base[:, :, -1] = 0  # (nothing falls off the edge)
    images = np.concatenate([base, shifted])
    ids, d2 = shift_knn_graph(images, k=1, radius=1, angles=(0.0, 10.0), pca_dim=40)
    partner = np.r_[np.arange(20, 40), np.arange(20)]
    assert (ids[:, 0] == partner).all() and np.allclose(d2[:, 0], 0, atol=1e-3)


def test_spectral_view_separates_blobs_and_input_shape():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(c, 1, (50, 6)) for c in (0, 12, 24)]).astype(np.float32)
    S = spectral_view(X, k=8, dim=4)
    assert S.shape == (150, 4) and np.allclose(np.linalg.norm(S, axis=1), 1, atol=1e-4)
    # one label per blob and a linear model on the spectral view label (nearly) every point
    from sklearn.linear_model import LogisticRegression

    y = np.repeat(np.arange(3), 50)
    assert LogisticRegression(C=10).fit(S[[0, 50, 100]], [0, 1, 2]).score(S, y) > 0.9
    assert encoder_input(X, k=8, spectral_dim=4, pca_dim=5).shape == (150, 9)
