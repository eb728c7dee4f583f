"""Backbones LANCET trains to get an embedding z and a linear head (W z + b) on it.

* ``MLPBackbone`` (the default, any modality): an MLP encoder over the encoder input
  (:mod:`.features`), trained on labeled cross-entropy + a semi-supervised term on unlabeled items
  (confident pseudo-labels under input noise, FixMatch-style) + CFM (:mod:`.cfm`).
* ``SSLGANBackbone`` (the paper's choice, images): a semi-supervised GAN (Salimans et al., 2016)
  whose discriminator has K+1 outputs (the fake logit fixed at 0), a generator trained by feature
  matching, and CFM added to the discriminator loss.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .cfm import cfm_loss


def _mlp(sizes: list[int], dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(a, b), nn.ReLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(sizes[-2], sizes[-1]))
    return nn.Sequential(*layers)


def _balanced_batch(y_lab: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """Indices into the labeled set, classes sampled equally often (few-label classes not drowned)."""
    classes = torch.unique(y_lab)
    cls = classes[torch.randint(0, len(classes), (size,), generator=g)]
    out = torch.empty(size, dtype=torch.long)
    for c in classes:
        where = torch.nonzero(y_lab == c).squeeze(1)
        sel = cls == c
        out[sel] = where[torch.randint(0, len(where), (int(sel.sum()),), generator=g)]
    return out


class _Embeds(nn.Module):
    """Shared by the backbones: `encoder` gives z, `head` the logits over the K real classes."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = self.encoder(x)
        return z, self.head(z)

    def _training_tensors(self, X: np.ndarray, y: np.ndarray):
        """(seeded generator, X, y as tensors, labeled rows, unlabeled rows); y is -1 where unlabeled."""
        yt = torch.as_tensor(y, dtype=torch.long)
        return (torch.Generator().manual_seed(self.seed), torch.as_tensor(X, dtype=torch.float32), yt,
                torch.nonzero(yt >= 0).squeeze(1), torch.nonzero(yt < 0).squeeze(1))

    @torch.no_grad()
    def embed(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(z (n, z_dim), class probabilities over the K real classes (n, K)) for ``X``."""
        self.eval()
        z, logits = self(torch.as_tensor(X, dtype=torch.float32))
        return z.numpy(), F.softmax(logits, 1).numpy()

    @torch.no_grad()
    def log_proba(self, X: np.ndarray) -> np.ndarray:
        """(n, K) float64 log-probabilities over the K real classes (for calibration: a float32 softmax
        rounds confident rows to exactly 1 and loses their order)."""
        self.eval()
        _, logits = self(torch.as_tensor(X, dtype=torch.float32))
        return F.log_softmax(logits.double(), 1).numpy()


class MLPBackbone(_Embeds):
    """Encoder (MLP -> z) and linear head (z -> K logits), trained semi-supervised with CFM."""

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 256, z_dim: int = 64,
                 steps: int = 400, lr: float = 3e-3, batch_size: int = 512, lam_cfm: float = 0.1,
                 cfm_margin: float = 1.0, lam_unl: float = 1.0, threshold: float = 0.9,
                 noise: float = 0.1, weight_decay: float = 1e-4, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.n_classes = n_classes
        self.encoder = _mlp([in_dim, hidden, z_dim])
        self.head = nn.Linear(z_dim, n_classes)
        self.steps, self.lr, self.batch_size = steps, lr, batch_size
        self.lam_cfm, self.cfm_margin = lam_cfm, cfm_margin
        self.lam_unl, self.threshold, self.noise = lam_unl, threshold, noise
        self.weight_decay, self.seed = weight_decay, seed

    def fit(self, X: np.ndarray, y: np.ndarray, progress=None) -> "MLPBackbone":
        """Train on ``X`` (n, d) with ``y`` (n,) class ids, -1 for unlabeled."""
        g, Xt, yt, lab, unl = self._training_tensors(X, y)
        if len(lab) == 0:
            raise ValueError("the backbone needs at least one labeled item")
        scale = Xt.std(0).mean()
        opt = torch.optim.AdamW(self.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, total_steps=self.steps)
        self.train()
        for step in range(self.steps):
            li = lab[_balanced_batch(yt[lab], min(self.batch_size, max(64, len(lab))), g)]
            xl = Xt[li] + self.noise * scale * torch.randn(len(li), Xt.shape[1], generator=g)
            zl, ol = self(xl)
            loss = F.cross_entropy(ol, yt[li])
            if len(unl):
                ui = unl[torch.randint(0, len(unl), (min(self.batch_size, len(unl)),), generator=g)]
                xu = Xt[ui]
                with torch.no_grad():
                    pu = F.softmax(self(xu)[1], 1)
                conf, pseudo = pu.max(1)
                zu, ou = self(xu + self.noise * scale * torch.randn(xu.shape, generator=g))
                mask = (conf >= self.threshold).float()
                ramp = min(1.0, step / (0.3 * self.steps))
                loss = loss + ramp * self.lam_unl * (F.cross_entropy(ou, pseudo, reduction="none") * mask).mean()
                if self.lam_cfm:
                    loss = loss + ramp * self.lam_cfm * cfm_loss(zl, yt[li], zu, F.softmax(ou, 1),
                                                                   self.n_classes, self.cfm_margin)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if progress is not None:
                progress.update(1)
        self.eval()
        return self


class SSLGANBackbone(_Embeds):
    """Semi-supervised GAN with feature matching; discriminator features are z, K real logits + fake=0."""

    def __init__(self, in_dim: int, n_classes: int, hidden: int = 256, z_dim: int = 64,
                 noise_dim: int = 64, steps: int = 600, lr: float = 1e-3, batch_size: int = 256,
                 lam_cfm: float = 0.1, cfm_margin: float = 1.0, seed: int = 0):
        super().__init__()
        torch.manual_seed(seed)
        self.n_classes, self.noise_dim = n_classes, noise_dim
        self.encoder = nn.Sequential(nn.Linear(in_dim, hidden), nn.LeakyReLU(0.2), nn.Dropout(0.2),
                                     nn.Linear(hidden, z_dim), nn.LeakyReLU(0.2))
        self.head = nn.Linear(z_dim, n_classes)
        self.generator = nn.Sequential(nn.Linear(noise_dim, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                                       nn.Linear(hidden, in_dim))
        self.steps, self.lr, self.batch_size = steps, lr, batch_size
        self.lam_cfm, self.cfm_margin, self.seed = lam_cfm, cfm_margin, seed

    def fit(self, X: np.ndarray, y: np.ndarray, progress=None) -> "SSLGANBackbone":
        """Train discriminator (K+1 outputs, + CFM) and generator (feature matching) alternately."""
        g, Xt, yt, lab, unl = self._training_tensors(X, y)
        if len(lab) == 0 or len(unl) == 0:
            raise ValueError("the SSL-GAN needs labeled and unlabeled items")
        d_params = list(self.encoder.parameters()) + list(self.head.parameters())
        opt_d = torch.optim.Adam(d_params, lr=self.lr, betas=(0.5, 0.999))
        opt_g = torch.optim.Adam(self.generator.parameters(), lr=self.lr, betas=(0.5, 0.999))
        self.train()
        bs = self.batch_size
        for _ in range(self.steps):
            li = lab[_balanced_batch(yt[lab], bs, g)]
            ui = unl[torch.randint(0, len(unl), (bs,), generator=g)]
            fake = self.generator(torch.rand(bs, self.noise_dim, generator=g))
            zl, ol = self(Xt[li])
            zu, ou = self(Xt[ui])
            _, of = self(fake.detach())
            lse_u, lse_f = torch.logsumexp(ou, 1), torch.logsumexp(of, 1)
            # real unlabeled: log D(x) = lse - softplus(lse); fake: log(1 - D) = -softplus(lse)
            loss_d = (F.cross_entropy(ol, yt[li]) + (-lse_u + F.softplus(lse_u)).mean()
                      + F.softplus(lse_f).mean())
            if self.lam_cfm:
                loss_d = loss_d + self.lam_cfm * cfm_loss(zl, yt[li], zu, F.softmax(ou, 1).detach(),
                                                          self.n_classes, self.cfm_margin)
            opt_d.zero_grad()
            loss_d.backward()
            opt_d.step()
            fake = self.generator(torch.rand(bs, self.noise_dim, generator=g))
            zf, _ = self(fake)
            with torch.no_grad():
                zr, _ = self(Xt[ui])
            loss_g = (zf.mean(0) - zr.mean(0)).pow(2).mean()
            opt_g.zero_grad()
            loss_g.backward()
            opt_g.step()
            if progress is not None:
                progress.update(1)
        self.eval()
        return self
