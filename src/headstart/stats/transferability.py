"""Transferability scores: how well a frozen backbone's embeddings suit a labelled target set,
estimated without training a head.  All work on cached embeddings (numpy, vectorised).

- :func:`logme` -- LogME, You et al., "LogME: Practical Assessment of Pre-trained Models for
  Transfer Learning", ICML 2021: the log marginal evidence of a Bayesian linear model on the
  features, per class one-vs-rest target, maximised over the prior/noise precisions by the
  paper's fixed-point iteration (the reference implementation's ``_fit_fixed_point``).
- :func:`leep` -- LEEP, Nguyen et al., "LEEP: A New Measure to Evaluate Transferability of
  Learned Representations", ICML 2020: needs the source model's ImageNet softmax.
- :func:`nce` -- NCE, Tran et al., "Transferability and Hardness of Supervised Classification
  Tasks", ICCV 2019: negative conditional entropy of the target labels given the source model's
  ImageNet argmax pseudo-labels.
- :func:`shrinkage_h_score` -- H-score (Bao et al. 2019) with the Ledoit-Wolf shrinkage
  covariance of Ibrahim et al., "Newer is not always better: Rethinking transferability metrics,
  their peculiarities, stability and performance", ECML-PKDD 2022.
- :func:`knn_accuracy` -- leave-one-out accuracy of a cosine k-nearest-neighbour classifier.

Higher is better for every score.  Scoring several labelings of the same features (a multi-label
task's labels, one yes/no question each) passes one :class:`Shared` to every call: the work that
does not depend on the labels (spectra, shrinkage, nearest neighbours) is then done once.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, TypeVar, cast

import numpy as np
from numpy.typing import NDArray

from headstart.errors import DataError

__all__ = ["Shared", "encode", "knn_accuracy", "leep", "logme", "nce", "shrinkage_h_score"]

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]
T = TypeVar("T")

#: Fixed-point iterations and relative tolerance on alpha/beta, as in the reference code.
_LOGME_ITERATIONS = 11
_LOGME_TOL = 1e-3
_LOGME_EPS = 1e-5


class Shared:
    """The label-independent intermediate results of the scores on ONE feature matrix, each
    computed on first use and kept.  Pass the same instance to the scores of several labelings
    of the same features (never of other features); the numbers are those without it."""

    def __init__(self) -> None:
        self._memo: dict[Hashable, Any] = {}

    def get(self, key: Hashable, make: Callable[[], T]) -> T:
        """The result stored under ``key``, made by ``make()`` the first time."""
        if key not in self._memo:
            self._memo[key] = make()
        return cast(T, self._memo[key])


def _shared(shared: Shared | None, key: Hashable, make: Callable[[], T]) -> T:
    return make() if shared is None else shared.get(key, make)


def encode(labels: Sequence[str]) -> tuple[IntArray, list[str]]:
    """Integer codes 0..C-1 for ``labels`` and the sorted class names."""
    classes = sorted(set(labels))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[label] for label in labels], dtype=np.intp), classes


def _check(features: np.ndarray, y: IntArray) -> FloatArray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or len(x) != len(y):
        raise DataError(f"features must be (N, D) with N = {len(y)} labels; got {x.shape}")
    if len(y) < 2 or len(np.unique(y)) < 2:
        raise DataError("transferability needs at least 2 images of at least 2 classes")
    if not np.isfinite(x).all():
        raise DataError("features contain NaN or infinite values")
    return x


def _spectrum(x: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Eigenvalues of F^T F (all D of them, zeros included) and the basis U (N, k) of the
    column space of F, from the smaller Gram matrix."""
    n, d = x.shape
    if n <= d:
        sigma, u = np.linalg.eigh(x @ x.T)
    else:
        sigma, v = np.linalg.eigh(x.T @ x)
        u = x @ v / np.sqrt(np.clip(sigma, 1e-300, None))
    # numerically zero eigenvalues (e.g. the one centring removes) belong to the null space
    keep = sigma > max(float(sigma.max()), 0.0) * 1e-10
    return sigma[keep], u[:, keep]


def logme(features: np.ndarray, y: IntArray, shared: Shared | None = None) -> float:
    """LogME: mean over classes of the per-sample log evidence of a one-vs-rest linear model.

    Unlike the reference fixed-point code, ``log|A|`` counts all ``D`` eigenvalues of
    ``alpha I + beta F^T F`` (the ``D - k`` zero ones add ``log alpha``); the reference drops
    them when ``N < D``, which inflates the score for small data sets.  ``shared``: see
    :class:`Shared`.
    """
    x = _check(features, y)
    n, d = x.shape
    sigma_k, u = _shared(shared, "spectrum", lambda: _spectrum(x))
    targets = (y[:, None] == np.arange(int(y.max()) + 1)[None, :]).astype(np.float64)
    proj = u.T @ targets  # (k, C)
    x2 = proj**2
    res_x2 = (targets**2).sum(axis=0) - x2.sum(axis=0)  # the part of y outside F's span
    sigma = sigma_k[:, None]
    n_zero = d - len(sigma_k)
    c = targets.shape[1]
    alpha, beta = np.ones(c), np.ones(c)
    active = np.ones(c, dtype=bool)
    for _ in range(_LOGME_ITERATIONS):
        t = alpha / beta
        gamma = (sigma / (sigma + t)).sum(axis=0)
        m2 = (sigma * x2 / (t + sigma) ** 2).sum(axis=0)
        res2 = (x2 / (1.0 + sigma / t) ** 2).sum(axis=0) + res_x2
        new_alpha = gamma / (m2 + _LOGME_EPS)
        new_beta = (n - gamma) / (res2 + _LOGME_EPS)
        alpha = np.where(active, new_alpha, alpha)
        beta = np.where(active, new_beta, beta)
        active &= np.abs(alpha / beta - t) / t > _LOGME_TOL
        if not active.any():
            break
    t = alpha / beta
    m2 = (sigma * x2 / (t + sigma) ** 2).sum(axis=0)
    res2 = (x2 / (1.0 + sigma / t) ** 2).sum(axis=0) + res_x2
    log_det = np.log(alpha + beta * sigma).sum(axis=0) + n_zero * np.log(alpha)
    evidence = (
        d / 2.0 * np.log(alpha)
        + n / 2.0 * np.log(beta)
        - 0.5 * log_det
        - beta / 2.0 * res2
        - alpha / 2.0 * m2
        - n / 2.0 * np.log(2 * np.pi)
    )
    return float(np.mean(evidence / n))


def _check_proba(source_proba: np.ndarray, y: IntArray) -> FloatArray:
    p = np.asarray(source_proba, dtype=np.float64)
    if p.ndim != 2 or len(p) != len(y):
        raise DataError(f"source probabilities must be (N, Z) with N = {len(y)}; got {p.shape}")
    return p


def leep(source_proba: np.ndarray, y: IntArray) -> float:
    """LEEP: mean log-likelihood of the target labels under the "expected empirical predictor"
    P(y|x) = sum_z P(y|z) theta(x)_z built from the source model's softmax ``theta``."""
    p = _check_proba(source_proba, y)
    n = len(y)
    c = int(y.max()) + 1
    onehot = (y[:, None] == np.arange(c)[None, :]).astype(np.float64)
    joint = onehot.T @ p / n  # (C, Z): P(y, z)
    cond = joint / np.clip(joint.sum(axis=0, keepdims=True), 1e-300, None)  # P(y | z)
    eep = p @ cond.T  # (N, C)
    return float(np.mean(np.log(np.clip(eep[np.arange(n), y], 1e-300, None))))


def nce(source_proba: np.ndarray, y: IntArray) -> float:
    """NCE: -H(Y | Z) with Z the source model's argmax class, from the empirical joint."""
    p = _check_proba(source_proba, y)
    z = p.argmax(axis=1)
    _, z = np.unique(z, return_inverse=True)
    c, k = int(y.max()) + 1, int(z.max()) + 1
    joint = np.bincount(y * k + z, minlength=c * k).reshape(c, k) / len(y)
    pz = joint.sum(axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(joint > 0, joint * np.log(joint / pz), 0.0)
    return float(terms.sum())


def _ledoit_wolf_shrinkage(xc: FloatArray) -> tuple[float, float]:
    """Ledoit-Wolf shrinkage ``s`` and target scale ``mu`` (scikit-learn's formula) of centred
    data, computed through the N x N Gram matrix so it costs O(N^2 D), not O(D^3)."""
    n, d = xc.shape
    row_sq = (xc**2).sum(axis=1)
    trace_terms = (xc**2).sum(axis=0) / n
    mu = float(trace_terms.sum() / d)
    gram = xc @ xc.T if n <= d else xc.T @ xc
    delta_ = float((gram**2).sum()) / n**2
    beta_ = float((row_sq**2).sum())
    beta = (beta_ / n - delta_) / (d * n)
    delta = (delta_ - 2.0 * mu * trace_terms.sum() + d * mu**2) / d
    beta = min(beta, delta)
    return (0.0 if beta == 0 else beta / delta), mu


def _centred_spectrum(
    x: FloatArray,
) -> tuple[FloatArray, tuple[float, float], tuple[FloatArray, FloatArray]]:
    """The centred features, their Ledoit-Wolf shrinkage and their spectrum (the H-score's
    label-independent part)."""
    xc = x - x.mean(axis=0)
    return xc, _ledoit_wolf_shrinkage(xc), _spectrum(xc)


def shrinkage_h_score(features: np.ndarray, y: IntArray, shared: Shared | None = None) -> float:
    """H-score tr(Sigma^-1 Sigma_g) with Sigma the Ledoit-Wolf shrunk feature covariance
    (1 - s) S + s mu I and Sigma_g the covariance of the class-conditional means, scaled by
    (1 - s) as in Ibrahim et al.'s code.  ``shared``: see :class:`Shared`."""
    x = _check(features, y)
    n = len(x)
    xc, (shrink, mu), (sigma, u) = _shared(shared, "centred", lambda: _centred_spectrum(x))
    counts = np.bincount(y)
    present = np.flatnonzero(counts)
    means = np.stack([xc[y == c].mean(axis=0) for c in present])  # (C, D), centred
    weights = counts[present] / (n - 1)
    # sigma, u: eigenvalues of Xc^T Xc and the left basis
    lam = sigma / n  # eigenvalues of S = Xc^T Xc / n
    # coordinates of each class mean on S's eigenvectors v_i = Xc^T u_i / sqrt(sigma_i)
    coords = (means @ xc.T @ u) / np.sqrt(np.clip(sigma, 1e-300, None))  # (C, k)
    floor = shrink * mu
    inside = coords**2 / ((1.0 - shrink) * lam + floor)
    outside = (means**2).sum(axis=1) - (coords**2).sum(axis=1)  # on the null space of S
    quad = inside.sum(axis=1) + (np.clip(outside, 0.0, None) / floor if floor > 0 else 0.0)
    return float((1.0 - shrink) * (weights * quad).sum())


def _neighbours(x: FloatArray, k: int, block: int) -> tuple[IntArray, FloatArray]:
    """Each row's ``k`` most cosine-similar other rows (N, k) and their similarities (N, k)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    x = x / np.clip(norms, 1e-12, None)
    nearest, near_sims = [], []
    for start in range(0, len(x), block):
        sims = x[start : start + block] @ x.T
        rows = np.arange(sims.shape[0])
        sims[rows, start + rows] = -np.inf  # leave the image itself out
        nearest.append(np.argpartition(-sims, k - 1, axis=1)[:, :k])
        near_sims.append(np.take_along_axis(sims, nearest[-1], axis=1))
    return np.concatenate(nearest), np.concatenate(near_sims)


def knn_accuracy(
    features: np.ndarray, y: IntArray, k: int = 5, block: int = 2048, shared: Shared | None = None
) -> float:
    """Leave-one-out accuracy of a cosine kNN classifier (majority vote, ties to the nearer).
    ``shared``: see :class:`Shared`."""
    x = _check(features, y)
    n = len(x)
    k = max(1, min(k, n - 1))
    c = int(y.max()) + 1
    nearest, near_sims = _shared(shared, ("knn", k, block), lambda: _neighbours(x, k, block))
    correct = 0
    for start in range(0, n, block):
        near, sims = nearest[start : start + block], near_sims[start : start + block]
        rows = np.arange(len(near))
        votes = np.zeros((len(rows), c))
        # each neighbour votes 1, plus a tiny similarity bonus so ties go to the nearer class
        np.add.at(votes, (np.repeat(rows, k), y[near].ravel()), 1.0 + 1e-6 * sims.ravel())
        correct += int((votes.argmax(axis=1) == y[start : start + block]).sum())
    return correct / n
