"""Backbones train and separate easy classes: the MLP default and the paper's SSL-GAN."""
import numpy as np
import pytest
import torch

from dcai_widgets.lancet.backbone import MLPBackbone, SSLGANBackbone


def _blobs(seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, (3, 8))
    X = np.vstack([c + rng.normal(0, 1, (60, 8)) for c in centers]).astype(np.float32)
    y = np.repeat(np.arange(3), 60)
    y_obs = np.full(len(y), -1)
    y_obs[[0, 1, 60, 61, 120, 121]] = y[[0, 1, 60, 61, 120, 121]]
    return X, y, y_obs


@pytest.mark.parametrize("cls,kw", [(MLPBackbone, dict(steps=80)), (SSLGANBackbone, dict(steps=150))])
def test_backbone_learns_blobs_from_six_labels(cls, kw):
    torch.set_num_threads(1)
    X, y, y_obs = _blobs()
    net = cls(X.shape[1], 3, z_dim=16, **kw).fit(X, y_obs)
    z, p = net.embed(X)
    assert z.shape == (180, 16) and p.shape == (180, 3)
    assert np.allclose(p.sum(1), 1, atol=1e-5)
    assert (p.argmax(1) == y).mean() > 0.9


def test_backbones_need_labels():
    X, _, _ = _blobs()
    with pytest.raises(ValueError, match="labeled"):
        MLPBackbone(8, 3, steps=5).fit(X, np.full(len(X), -1))
    with pytest.raises(ValueError, match="labeled"):
        SSLGANBackbone(8, 3, steps=5).fit(X, np.full(len(X), -1))
