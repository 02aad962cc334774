"""The TF-IDF baseline for text: a head that reads the words themselves, not embeddings.

Features: word 1-2-grams and character 2-5-grams inside word boundaries (``char_wb``), each a
TF-IDF block (sublinear term frequency, smoothed idf, rows L2-normalised) fitted on the
training texts only; the two blocks side by side form one sparse CSR matrix that is never made
dense (banking77's 10k texts give ~10^5 columns).  Head: multinomial logistic regression
(lbfgs) on that matrix, ``C`` fixed or chosen by stratified k-fold CV on a grid.

:class:`TfidfHead` is a :class:`~headstart.heads._base.Head` whose ``X`` is a sequence of
texts.  Its fitted state is plain arrays (vocabularies as UTF-8 bytes, idf, coefficients), so it
exports without pickle like every head and a head rebuilt from them predicts exactly as the
fitted one: both compute with the same float32 coefficients and the same transform.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray
from sklearn.exceptions import ConvergenceWarning
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.preprocessing import normalize
from threadpoolctl import threadpool_limits

from headstart import errors
from headstart.backbones.preprocessing import IMAGENET_MEAN, IMAGENET_STD, Preprocessing
from headstart.backbones.spec import BackboneRef, TextSpec
from headstart.heads._base import (
    Head,
    check_class_weight,
    class_weight_by_index,
    encode_labels,
    ensure_fitted,
    probabilities_from_scores,
)

__all__ = ["DEFAULT_C", "WORDS", "TfidfHead", "as_texts", "is_words", "words_ref"]

#: The default inverse regularisation strength, chosen on a stratified 20% of banking77's
#: training texts held out from the rest (77 classes, 2,001 texts): accuracy 89.2% at C=3,
#: 89.5% at 10, 89.4% at 30, 89.2% at 100 (min_df 2; min_df 1 doubles the columns for
#: +0.1..0.5 points, within noise; words alone: 86.9%).
DEFAULT_C = 10.0
#: Vocabularies travel as one UTF-8 byte string, terms separated by this; no term holds it
#: (both analyzers split on whitespace, and word pairs are joined by a plain space).
_SEPARATOR = "\n"
_BLOCKS = ("word", "char")
#: The name a TF-IDF model's backbone goes by: it has none, its head reads the texts.
WORDS = "tfidf"


def words_ref() -> BackboneRef:
    """The backbone of a TF-IDF model: no network and no weights; its "features" are the texts
    themselves (an (n, 1) array of strings), which :class:`TfidfHead` reads.  A text ref
    (``modality == "text"``), so whatever reads text models reads it."""
    prep = Preprocessing(256, 224, IMAGENET_MEAN, IMAGENET_STD, "bilinear")  # unused
    return BackboneRef(WORDS, None, "", prep, None, text=TextSpec(Path(), "", 0, "words", False))


def is_words(ref: BackboneRef) -> bool:
    """Whether ``ref`` is :func:`words_ref` (its record read back from a bundle included)."""
    return ref.name == WORDS and ref.text is not None and ref.text.pooling == "words"


def as_texts(X: Any) -> list[str]:
    """``X`` as a list of strings: a sequence of texts, or an (n,) / (n, 1) array of them.
    Anything else (e.g. embeddings) is a one-line :class:`ConfigError`."""
    if isinstance(X, str):
        raise errors.ConfigError("the tfidf head reads a sequence of texts, not one string")
    arr = np.asarray(X, dtype=object)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1 or not all(isinstance(t, str) for t in arr):
        raise errors.ConfigError(
            "the tfidf head reads texts (one string per sample), not embeddings: use it on "
            "text data (--strategy tfidf)"
        )
    return [str(t) for t in arr]


def _analyzer(block: str, ngrams: tuple[int, int], vocabulary: Mapping[str, int] | None = None,
              min_df: int = 1) -> CountVectorizer:  # fmt: skip
    return CountVectorizer(
        analyzer="word" if block == "word" else "char_wb",
        ngram_range=ngrams,
        lowercase=True,
        min_df=min_df if vocabulary is None else 1,
        vocabulary=vocabulary,
        dtype=np.float64,
    )


def _weigh(counts: sp.csr_matrix, idf: NDArray[np.float64], sublinear: bool) -> sp.csr_matrix:
    """TF-IDF of term counts, as scikit-learn's TfidfTransformer computes it: ``1 + log(tf)``
    (sublinear), times idf, rows L2-normalised."""
    if counts.shape[1] == 0:  # a block with no term (tiny data, high min_df)
        return sp.csr_matrix(counts.shape, dtype=np.float32)
    tf = counts.tocsr().astype(np.float64)
    if sublinear:
        np.log(tf.data, out=tf.data)
        tf.data += 1.0
    weighted = tf @ sp.diags(idf, format="csr")
    out: sp.csr_matrix = normalize(weighted, norm="l2", copy=False).astype(np.float32)
    return out


def _encode(terms: Sequence[str]) -> NDArray[np.uint8]:
    data = _SEPARATOR.join(terms).encode("utf-8", "surrogatepass")
    return np.frombuffer(data, dtype=np.uint8).copy()


def _decode(data: NDArray[Any], n_terms: int, block: str) -> list[str]:
    text = np.asarray(data, dtype=np.uint8).tobytes().decode("utf-8", "surrogatepass")
    terms = text.split(_SEPARATOR) if n_terms else []
    if len(terms) != n_terms or len(set(terms)) != n_terms:
        raise errors.BundleError(
            f"tfidf head's {block} vocabulary holds {len(terms)} terms for {n_terms} idf values"
        )
    return terms


class TfidfHead(Head):
    """Word + character TF-IDF and multinomial logistic regression, on texts (module doc).

    Parameters
    ----------
    Cs:
        Inverse L2 regularisation strengths; ``None`` is ``(DEFAULT_C,)``.  One value is used
        as is; several are searched by stratified ``cv``-fold CV (accuracy; the vectoriser is
        fitted once on all training texts, the idf leak into the folds is negligible).
    word_ngrams, char_ngrams:
        n-gram ranges of the word and ``char_wb`` blocks; ``char_ngrams=None`` drops the
        character block.
    min_df:
        A term must occur in at least this many training texts.
    sublinear_tf:
        ``1 + log(tf)`` instead of raw counts.
    class_weight:
        ``None``, ``"balanced"`` or a mapping from class label to weight.
    max_iter, tol:
        lbfgs limits.
    cv, random_state:
        Folds of the C search and their shuffling seed.
    """

    kind: ClassVar[str] = "tfidf"
    _array_attrs: ClassVar[tuple[str, ...]] = (
        "vocab_word", "idf_word", "vocab_char", "idf_char", "coef", "intercept",
    )  # fmt: skip

    def __init__(
        self,
        Cs: Sequence[float] | None = None,
        word_ngrams: tuple[int, int] = (1, 2),
        char_ngrams: tuple[int, int] | None = (2, 5),
        min_df: int = 2,
        sublinear_tf: bool = True,
        class_weight: Mapping[Any, float] | Literal["balanced"] | None = None,
        max_iter: int = 300,
        tol: float = 1e-4,
        cv: int = 3,
        random_state: int | None = 0,
    ) -> None:
        self.Cs = Cs
        self.word_ngrams = word_ngrams
        self.char_ngrams = char_ngrams
        self.min_df = min_df
        self.sublinear_tf = sublinear_tf
        self.class_weight = class_weight
        self.max_iter = max_iter
        self.tol = tol
        self.cv = cv
        self.random_state = random_state

    # -- fitting ---------------------------------------------------------------------
    def fit(self, X: Any, y: Any) -> TfidfHead:
        """Fit the vocabularies and idf on the texts ``X``, then the linear head on labels
        ``y``; returns ``self``."""
        texts = as_texts(X)
        labels = np.asarray(y)
        if labels.ndim != 1 or len(labels) != len(texts):
            raise errors.DataError(f"{len(texts)} texts but labels of shape {labels.shape}")
        grid = self._grid()
        self.classes_, y_idx = encode_labels(labels)
        weights = class_weight_by_index(self.class_weight, self.classes_)
        Z = self._fit_vocabulary(texts)
        # one BLAS thread: on a few busy cores lbfgs's small products only lose from more
        with threadpool_limits(limits=1, user_api="blas"):
            self.cv_scores_ = self._search(Z, y_idx, grid, weights)
            best = int(np.nanargmax(self.cv_scores_)) if np.isfinite(self.cv_scores_).any() else 0
            self.C_ = float(grid[best])
            model = self._model(self.C_, weights).fit(Z, y_idx)
        self.coef_ = np.ascontiguousarray(model.coef_, dtype=np.float32)
        self.intercept_ = np.ascontiguousarray(model.intercept_, dtype=np.float32)
        self.n_iter_ = int(np.max(model.n_iter_))
        return self

    def _fit_vocabulary(self, texts: list[str]) -> sp.csr_matrix:
        blocks = []
        for block, ngrams in self._blocks():
            counter = _analyzer(block, ngrams, min_df=self._min_df(len(texts)))
            try:
                counts = counter.fit_transform(texts)
            except ValueError:  # every term below min_df (tiny data): an empty block
                counts, counter.vocabulary_ = sp.csr_matrix((len(texts), 0)), {}
            terms = sorted(counter.vocabulary_, key=counter.vocabulary_.__getitem__)
            df = np.bincount(counts.tocsr().indices, minlength=len(terms))  # texts per term
            idf = np.log((1 + len(texts)) / (1 + df)) + 1.0  # smoothed, as scikit-learn's
            setattr(self, f"vocab_{block}_", _encode(terms))
            setattr(self, f"idf_{block}_", idf.astype(np.float64))
            blocks.append(_weigh(counts, idf, self.sublinear_tf))
        for block in _BLOCKS[len(blocks) :]:
            setattr(self, f"vocab_{block}_", np.zeros(0, dtype=np.uint8))
            setattr(self, f"idf_{block}_", np.zeros(0, dtype=np.float64))
        self._counters: dict[str, CountVectorizer] | None = None
        Z = sp.hstack(blocks, format="csr")
        if Z.shape[1] == 0:
            raise errors.DataError(
                "the training texts share no word or character n-gram (min_df "
                f"{self.min_df}): too few or too short texts for a TF-IDF head"
            )
        self.n_features_in_ = int(Z.shape[1])
        return Z

    def _min_df(self, n: int) -> int:
        if not isinstance(self.min_df, int | np.integer) or self.min_df < 1:
            raise errors.ConfigError(f"min_df must be an integer >= 1; got {self.min_df!r}")
        return int(min(self.min_df, n))

    def _blocks(self) -> list[tuple[str, tuple[int, int]]]:
        out = [("word", self.word_ngrams)]
        if self.char_ngrams is not None:
            out.append(("char", self.char_ngrams))
        for block, (low, high) in out:
            if not (1 <= low <= high):
                raise errors.ConfigError(
                    f"{block}_ngrams must be (low, high) with 1 <= low <= high; got {(low, high)!r}"
                )
        return [(b, (int(lo), int(hi))) for b, (lo, hi) in out]

    def _grid(self) -> NDArray[np.float64]:
        grid = np.asarray((DEFAULT_C,) if self.Cs is None else self.Cs, dtype=np.float64).ravel()
        if grid.size == 0 or not np.all(np.isfinite(grid)) or np.any(grid <= 0):
            raise errors.ConfigError(f"Cs must be positive finite numbers; got {self.Cs!r}")
        check_class_weight(self.class_weight)
        if not isinstance(self.cv, int | np.integer) or self.cv < 2:
            raise errors.ConfigError(f"cv must be an integer >= 2; got {self.cv!r}")
        return np.unique(grid)

    def _model(self, C: float, weights: Any) -> LogisticRegression:
        return LogisticRegression(C=C, class_weight=weights, max_iter=self.max_iter, tol=self.tol)

    def _search(
        self, Z: sp.csr_matrix, y_idx: NDArray[np.intp], grid: NDArray[np.float64], weights: Any
    ) -> NDArray[np.float64]:
        """Mean CV accuracy per value of ``C`` (NaN when there is nothing to search)."""
        scores = np.full(grid.size, np.nan)
        n_splits = min(self.cv, int(np.bincount(y_idx).min()))
        if grid.size == 1 or n_splits < 2:
            return scores
        folds = StratifiedKFold(n_splits, shuffle=True, random_state=self.random_state)
        for i, C in enumerate(grid):
            hits = []
            for train, test in folds.split(np.zeros(len(y_idx)), y_idx):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", ConvergenceWarning)
                    model = self._model(float(C), weights).fit(Z[train], y_idx[train])
                hits.append(np.mean(model.predict(Z[test]) == y_idx[test]))
            scores[i] = float(np.mean(hits))
        return scores

    # -- predicting ------------------------------------------------------------------
    def transform(self, X: Any) -> sp.csr_matrix:
        """The (n, n_features_in_) sparse TF-IDF matrix of texts ``X`` (float32)."""
        ensure_fitted(self)
        texts = as_texts(X)
        if self._counters is None:
            self._counters = self._rebuild_counters()
        blocks = []
        for block, _ in self._blocks():
            idf = getattr(self, f"idf_{block}_")
            if len(idf) == 0:
                continue
            counts = self._counters[block].transform(texts)
            blocks.append(_weigh(counts, idf, self.sublinear_tf))
        if not blocks:
            return sp.csr_matrix((len(texts), 0), dtype=np.float32)
        Z: sp.csr_matrix = sp.hstack(blocks, format="csr")
        return Z

    def _rebuild_counters(self) -> dict[str, CountVectorizer]:
        counters = {}
        for block, ngrams in self._blocks():
            idf = getattr(self, f"idf_{block}_")
            terms = _decode(getattr(self, f"vocab_{block}_"), len(idf), block)
            if terms:
                counters[block] = _analyzer(block, ngrams, {t: i for i, t in enumerate(terms)})
        return counters

    def decision_function(self, X: Any) -> NDArray[np.float64]:
        """Linear scores: (n,) for two classes (positive = ``classes_[1]``), else (n, k)."""
        Z = self.transform(X)
        coef = np.asarray(self.coef_, dtype=np.float32)
        scores = np.asarray(Z @ coef.T, dtype=np.float64) + self.intercept_
        return scores.ravel() if scores.shape[1] == 1 else scores

    def predict_proba(self, X: Any) -> NDArray[np.float64]:
        """Class probabilities of texts ``X``, columns in the order of ``classes_``."""
        return probabilities_from_scores(self.decision_function(X))

    # -- state -----------------------------------------------------------------------
    def export_extra(self) -> dict[str, Any]:
        """The chosen ``C``, the CV score per grid value and the lbfgs iterations."""
        scores = [None if not np.isfinite(s) else float(s) for s in self.cv_scores_]
        return {"C": self.C_, "cv_scores": scores, "n_iter": self.n_iter_}

    def restore_state(self, arrays: Mapping[str, NDArray[Any]], extra: Mapping[str, Any]) -> None:
        """Set the fitted attributes from exported state, checked for consistency."""
        super().restore_state(arrays, extra)
        width = len(self.idf_word_) + len(self.idf_char_)
        coef = np.asarray(self.coef_)
        if coef.ndim != 2 or coef.shape[1] != width or len(self.intercept_) != coef.shape[0]:
            raise errors.BundleError(
                f"tfidf head state is inconsistent: coef {coef.shape} for {width} terms and "
                f"{len(self.intercept_)} intercepts"
            )
        self.coef_ = np.ascontiguousarray(coef, dtype=np.float32)
        self.intercept_ = np.ascontiguousarray(self.intercept_, dtype=np.float32)
        self.n_features_in_ = width
        self._counters = self._rebuild_counters()  # checks the vocabularies now, not later
        self.C_ = float(extra.get("C", float("nan")))
        scores = extra.get("cv_scores") or []
        self.cv_scores_ = np.array([np.nan if s is None else s for s in scores], dtype=np.float64)
        self.n_iter_ = int(extra.get("n_iter", 0))
