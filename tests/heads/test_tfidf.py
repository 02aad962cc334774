"""The TF-IDF head: learns topics from a few real sentences, stays sparse, computes what
scikit-learn's TfidfVectorizer computes, and travels as plain arrays (no pickle) that predict
exactly like the fitted head."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
from safetensors.numpy import load, save
from sklearn.feature_extraction.text import TfidfVectorizer

from headstart.errors import BundleError, ConfigError, DataError
from headstart.heads.tfidf import DEFAULT_C, TfidfHead, as_texts
from texts import SENTENCES

UNSEEN = [  # new sentences in the classes' words
    "My card has not arrived yet, where is it?",
    "What exchange rate applies to euros?",
    "Can I top up my balance with a transfer?",
]


def texts_and_labels(per_class: int) -> tuple[list[str], list[str]]:
    """The first ``per_class`` sentences of each class, classes interleaved."""
    pairs = [(t[i], label) for i in range(per_class) for label, t in SENTENCES.items()]
    return [t for t, _ in pairs], [label for _, label in pairs]


@pytest.fixture(scope="module")
def fitted() -> TfidfHead:
    texts, labels = texts_and_labels(8)
    return TfidfHead(min_df=1).fit(texts, labels)


def test_learns_the_topics_of_unseen_sentences(fitted: TfidfHead) -> None:
    assert list(fitted.classes_) == ["card_arrival", "exchange_rate", "top_up"]
    assert list(fitted.predict(UNSEEN)) == ["card_arrival", "exchange_rate", "top_up"]
    proba = fitted.predict_proba(UNSEEN)
    assert proba.shape == (3, 3) and np.allclose(proba.sum(axis=1), 1.0)
    texts, labels = texts_and_labels(10)
    held = slice(24, 30)  # sentences 8 and 9 of each class: never seen in fitting
    # ten sentences a topic share few words with new ones: better than chance (1/3) is all
    assert np.mean(fitted.predict(texts[held]) == np.array(labels[held])) >= 1 / 2
    assert fitted.C_ == DEFAULT_C and np.isnan(fitted.cv_scores_).all()


def test_features_stay_sparse_and_match_scikit_learn(fitted: TfidfHead) -> None:
    texts, _ = texts_and_labels(8)
    Z = fitted.transform(texts)
    assert sp.issparse(Z) and Z.shape == (24, fitted.n_features_in_) and Z.dtype == np.float32
    n_word = len(fitted.idf_word_)
    reference = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1).fit(texts)
    # the word block: same terms in the same order, same weights (float32)
    assert reference.get_feature_names_out().size == n_word
    expected = reference.transform(UNSEEN).toarray()
    assert np.allclose(fitted.transform(UNSEEN)[:, :n_word].toarray(), expected, atol=1e-6)
    # each block is L2-normalised on its own
    row = fitted.transform(UNSEEN[:1])
    assert np.linalg.norm(row[:, :n_word].toarray()) == pytest.approx(1.0, abs=1e-5)
    assert np.linalg.norm(row[:, n_word:].toarray()) == pytest.approx(1.0, abs=1e-5)


def test_exported_arrays_predict_exactly_like_the_fitted_head(fitted: TfidfHead) -> None:
    """safetensors bytes + JSON state, as a bundle stores them: no pickle anywhere."""
    arrays = load(save({k: np.ascontiguousarray(v) for k, v in fitted.export_arrays().items()}))
    assert {a.dtype.kind for a in arrays.values()} <= {"u", "f"}  # bytes and numbers only
    extra = json.loads(json.dumps(fitted.export_extra()))
    params = json.loads(json.dumps(fitted.get_params()))
    params = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items()}
    rebuilt = TfidfHead(**params)
    rebuilt.classes_ = fitted.classes_
    rebuilt.restore_state(arrays, extra)
    assert rebuilt.n_features_in_ == fitted.n_features_in_
    assert np.array_equal(rebuilt.predict_proba(UNSEEN), fitted.predict_proba(UNSEEN))


def test_a_damaged_state_is_a_bundle_error(fitted: TfidfHead) -> None:
    arrays = dict(fitted.export_arrays())
    cut = dict(arrays, vocab_word=arrays["vocab_word"][:-40])
    rebuilt = TfidfHead(min_df=1)
    rebuilt.classes_ = fitted.classes_
    with pytest.raises(BundleError, match="word vocabulary holds"):
        rebuilt.restore_state(cut, fitted.export_extra())
    narrow = dict(arrays, coef=arrays["coef"][:, :-1])
    with pytest.raises(BundleError, match="inconsistent"):
        rebuilt.restore_state(narrow, fitted.export_extra())
    with pytest.raises(BundleError, match="lacks array 'idf_char'"):
        rebuilt.restore_state({k: v for k, v in arrays.items() if k != "idf_char"}, {})


def test_a_grid_of_C_is_searched_by_cross_validation() -> None:
    texts, labels = texts_and_labels(9)
    head = TfidfHead(Cs=(0.1, 10.0), min_df=1, cv=3).fit(texts, labels)
    assert np.isfinite(head.cv_scores_).all() and head.C_ in (0.1, 10.0)
    assert (0.1, 10.0)[int(np.argmax(head.cv_scores_))] == head.C_


def test_words_only() -> None:
    texts, labels = texts_and_labels(8)
    head = TfidfHead(char_ngrams=None, min_df=1).fit(texts, labels)
    assert len(head.idf_char_) == 0 and head.n_features_in_ == len(head.idf_word_)
    assert head.predict(UNSEEN).tolist() == ["card_arrival", "exchange_rate", "top_up"]


@pytest.mark.parametrize(
    ("X", "message"),
    [
        (np.zeros((4, 8)), "reads texts"),
        ("one text", "not one string"),
        ([1, 2, 3], "reads texts"),
    ],
)
def test_inputs_that_are_not_texts_are_refused(X: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        as_texts(X)


def test_bad_settings_and_data_are_one_line_errors() -> None:
    texts, labels = texts_and_labels(4)
    with pytest.raises(ConfigError, match="word_ngrams must be"):
        TfidfHead(word_ngrams=(2, 1)).fit(texts, labels)
    with pytest.raises(ConfigError, match="Cs must be positive"):
        TfidfHead(Cs=(0.0,)).fit(texts, labels)
    with pytest.raises(DataError, match="at least 2 classes"):
        TfidfHead(min_df=1).fit(texts[:3:3], labels[:3:3])
    with pytest.raises(DataError, match="share no word or character"):
        TfidfHead(min_df=5, char_ngrams=None).fit(["ab cd", "ef gh"], ["x", "y"])
