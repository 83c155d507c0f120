"""Mutual-information layer selection (FALCON, Hu et al. 2025, Sec. 3.1; reference ``MI/Mutual_Info.py``).

For each decoder block l, take the last-token hidden state (output of block l, i.e. HF
``hidden_states[l + 1]``) of n forget and n retain samples, estimate

    I(F; R) = H(F) + H(R) - H(F, R)

with Gaussian-KDE entropies after PCA (95% variance), and choose l* = argmin_l I. A low value
means forget and retain representations are least entangled at that layer, so steering forget
activations there should disturb retain the least.

Estimator, as in the reference code: each of F, R and the joint (F, R) is reduced separately
by PCA keeping ``pca_variance`` of its variance (only when it has more than 10 features), a
``scipy.stats.gaussian_kde`` (Scott bandwidth) is fitted on the samples, and H = -mean log p^(x_i)
over the same samples (resubstitution). With few samples (the reference uses ~30) the estimate is
a heuristic score rather than a consistent MI estimate: compare layers with it, not models.

Pairing for the joint entropy: the i-th forget sample is concatenated with the i-th retain sample
(the first n of each set, in order; both truncated to the shorter). Forget and retain data have no
natural correspondence, so any pairing is arbitrary; we keep the reference's order-based pairing so
our layer choices match its, and because a fixed order makes the choice reproducible (and identical
on every process of a multi-process run).

**A second estimator, comparable across layers** (``estimator="ksg"``). The reference estimate is
not comparable between layers: PCA keeps however many components reach 95% of the variance, which
differs per layer and between F, R and (F, R), and a KDE entropy moves with that dimension and with
the activations' scale (which grows with depth). ``ksg`` instead projects F and R each onto their
top ``components`` principal directions, whitened (unit variance: invariant to the layer's scale and
spectrum), the same number for every layer, and estimates I with the Kraskov-Stoegbauer-Grassberger
k-nearest-neighbour estimator (Kraskov et al. 2004, algorithm 1; max-norm, ``k`` neighbours):

    I = psi(k) + psi(n) - < psi(n_x + 1) + psi(n_y + 1) >

where n_x (n_y) counts the other samples whose F (R) part lies strictly within the distance to the
k-th neighbour in the joint space. Entropies are not estimated (reported as NaN).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from ..data.encode import collate
from ..errors import ConfigError


def kde_entropy(x: np.ndarray, pca_variance: float = 0.95, pca_above: int = 10) -> float:
    """Differential entropy (nats) of samples x [n, k]: PCA (if k > ``pca_above``) + Gaussian KDE resubstitution."""
    from scipy.stats import gaussian_kde

    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.shape[1] > pca_above and pca_variance < 1:
        from sklearn.decomposition import PCA

        x = PCA(n_components=pca_variance, svd_solver="full").fit_transform(x)
    while True:
        try:
            kde = gaussian_kde(x.T)
            return float(-np.mean(kde.logpdf(x.T)))
        except np.linalg.LinAlgError:
            if x.shape[1] == 1:
                raise
            x = x[:, :-1]  # drop the weakest principal direction until the kernel covariance is invertible


@dataclass(frozen=True)
class MIEstimate:
    mi: float
    h_forget: float
    h_retain: float
    h_joint: float


def ksg_mi(x: np.ndarray, y: np.ndarray, k: int = 3) -> float:
    """KSG estimate (nats) of I(X; Y) from paired samples x [n, dx], y [n, dy] (algorithm 1, max-norm)."""
    from scipy.spatial import cKDTree
    from scipy.special import digamma

    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    y = np.asarray(y, dtype=np.float64).reshape(len(y), -1)
    n = len(x)
    if not 1 <= k < n:
        raise ConfigError(f"KSG needs 1 <= k < n samples, got k={k}, n={n}.")
    joint = np.hstack([x, y])
    eps = cKDTree(joint).query(joint, k + 1, p=np.inf)[0][:, -1]
    r = np.nextafter(eps, 0)  # strictly inside the k-th neighbour's distance
    nx = cKDTree(x).query_ball_point(x, r, p=np.inf, return_length=True) - 1
    ny = cKDTree(y).query_ball_point(y, r, p=np.inf, return_length=True) - 1
    return float(digamma(k) + digamma(n) - np.mean(digamma(nx + 1) + digamma(ny + 1)))


def whitened_components(x: np.ndarray, m: int) -> np.ndarray:
    """The top-``m`` principal-component scores of x [n, d], each scaled to unit variance."""
    x = np.asarray(x, dtype=np.float64)
    x = x - x.mean(0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    m = max(1, min(m, int((s > s[0] * 1e-10).sum()) if s.size else 1))
    return u[:, :m] * np.sqrt(len(x) - 1)  # scores / std = u * s / (s / sqrt(n - 1))


ESTIMATORS = ("reference", "ksg")


def mutual_information(forget: np.ndarray, retain: np.ndarray, pca_variance: float = 0.95,
                       estimator: str = "reference", components: int = 4, k: int = 3) -> MIEstimate:
    """I(F; R) from paired rows (row i of each; truncated to the shorter).

    ``estimator="reference"``: H(F) + H(R) - H(F, R) with PCA(``pca_variance``) + Gaussian KDE (FALCON's
    code). ``"ksg"``: KSG on ``components`` whitened principal components of F and of R (see the module
    docstring)."""
    n = min(len(forget), len(retain))
    if n < 3:
        raise ConfigError(f"Mutual information needs at least 3 forget and 3 retain samples, got {len(forget)} and {len(retain)}.")
    if estimator not in ESTIMATORS:
        raise ConfigError(f"Unknown MI estimator '{estimator}'; choose one of {', '.join(ESTIMATORS)}.")
    f, r = np.asarray(forget)[:n].reshape(n, -1), np.asarray(retain)[:n].reshape(n, -1)
    if estimator == "ksg":
        mi = ksg_mi(whitened_components(f, components), whitened_components(r, components), min(k, n - 1))
        return MIEstimate(mi, float("nan"), float("nan"), float("nan"))
    h_f, h_r = kde_entropy(f, pca_variance), kde_entropy(r, pca_variance)
    h_j = kde_entropy(np.hstack([f, r]), pca_variance)
    return MIEstimate(h_f + h_r - h_j, h_f, h_r, h_j)


@dataclass(frozen=True)
class LayerSelection:
    layer: int
    """The chosen decoder block (lowest MI)."""
    layers: tuple[int, ...]
    estimates: tuple[MIEstimate, ...] = field(repr=False)

    @property
    def mi(self) -> dict[int, float]:
        return {l: e.mi for l, e in zip(self.layers, self.estimates)}


def select_from_states(forget_states: Sequence[np.ndarray], retain_states: Sequence[np.ndarray],
                       layers: Sequence[int] | None = None, pca_variance: float = 0.95,
                       estimator: str = "reference", components: int = 4) -> LayerSelection:
    """argmin over layers of I(F_l; R_l); ``*_states[i]`` are [n, d] samples of layer ``layers[i]``."""
    layers = tuple(layers) if layers is not None else tuple(range(len(forget_states)))
    est = tuple(mutual_information(f, r, pca_variance, estimator, components)
                for f, r in zip(forget_states, retain_states))
    best = int(np.argmin([e.mi for e in est]))
    return LayerSelection(layers[best], layers, est)


@torch.no_grad()
def last_token_states(model, examples: list[dict[str, Any]], pad_id: int, layers: Sequence[int],
                      batch_size: int = 8) -> list[np.ndarray]:
    """Output of each block in ``layers`` at each example's last real token: one [N, d] array per layer."""
    from ..methods.representation import decoder_blocks

    blocks = decoder_blocks(model)
    device = next(model.parameters()).device
    got: dict[int, list[torch.Tensor]] = {l: [] for l in layers}
    last: list[torch.Tensor] = []

    def hook(l):
        def fn(module, args, output):
            h = output[0] if isinstance(output, tuple) else output
            got[l].append(h[torch.arange(h.shape[0], device=h.device), last[0]].float().cpu())
        return fn

    handles = [blocks[l].register_forward_hook(hook(l)) for l in layers]
    was_training = model.training
    model.eval()
    try:
        for s in range(0, len(examples), batch_size):
            b = collate(examples[s:s + batch_size], pad_id)
            last[:] = [(b["attention_mask"].sum(-1) - 1).to(device)]
            model(input_ids=b["input_ids"].to(device), attention_mask=b["attention_mask"].to(device), use_cache=False)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return [torch.cat(got[l]).numpy() for l in layers]


def select_layer(model, forget: list[dict[str, Any]], retain: list[dict[str, Any]], pad_id: int,
                 n_samples: int = 30, layers: Sequence[int] | None = None, pca_variance: float = 0.95,
                 estimator: str = "reference", components: int = 4) -> LayerSelection:
    """FALCON's layer choice on encoded examples: the first ``n_samples`` of each set, all blocks by default."""
    layers, fs, rs = layer_states(model, forget[:n_samples], retain[:n_samples], pad_id, layers)
    return select_from_states(fs, rs, layers, pca_variance, estimator, components)


def layer_states(model, forget: list[dict[str, Any]], retain: list[dict[str, Any]], pad_id: int,
                 layers: Sequence[int] | None = None, what: str = "layers") -> tuple[tuple[int, ...], list, list]:
    """(checked layers, forget states, retain states) per layer, ready for ``select_from_states`` with
    any estimator (the forwards are the costly part: compute them once, compare estimators after)."""
    from ..methods.representation import check_layer, num_layers

    layers = tuple(layers) if layers is not None else tuple(range(num_layers(model)))
    for l in layers:
        check_layer(model, l, what)
    return layers, last_token_states(model, forget, pad_id, layers), last_token_states(model, retain, pad_id, layers)


def plot_selection(sel: LayerSelection, path: str | Path, title: str = "I(F; R) per layer",
                   other: LayerSelection | None = None) -> Path:
    """Save a line plot of the MI per layer with the chosen layer marked; ``other`` (e.g. the KSG
    selection) is drawn on its own y axis, since the two estimators' values have different scales."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    curves = [(ax, sel, "tab:purple", "reference (PCA+KDE)")]
    if other is not None:
        curves.append((ax.twinx(), other, "tab:green", "KSG (whitened PCs)"))
    handles = []
    for a, s, colour, name in curves:
        handles += a.plot(s.layers, [e.mi for e in s.estimates], "o-", color=colour, label=name)
        handles += a.plot([s.layer], [s.mi[s.layer]], "*", color=colour, markersize=16, markeredgecolor="black",
                          label=f"{name}: lowest at layer {s.layer}")
        a.set_ylabel(f"I(F; R) {name} [nats]", color=colour)
    ax.set_xlabel("decoder block (output)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
