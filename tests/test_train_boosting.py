"""SAMME boosting: the weight update against a NumPy reference, the stopping rules, the
weighted vote, and weak networks boosted on an imbalanced set."""
import math
import time

import numpy as np
import pytest

import fastdl
from fastdl import nn, optim
from fastdl.train import Boosting, per_class_recall, predict_logits
from fastdl.train.boosting import samme_step, train_weighted


def reference_samme(y, predictions, n_classes):
    """Weights, alphas and errors of SAMME over a fixed sequence of predictions."""
    weight = np.full(len(y), 1.0 / len(y))
    alphas, errors = [], []
    for predicted in predictions:
        wrong = (predicted != y).astype(np.float64)
        error = np.dot(weight, wrong) / weight.sum()
        alpha = np.log((1 - error) / error) + np.log(n_classes - 1)
        weight = weight * np.exp(alpha * wrong)
        weight = weight / weight.sum()
        alphas.append(alpha)
        errors.append(error)
    return weight, np.array(alphas), np.array(errors)


Y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 2])
PREDICTIONS = [np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
               np.array([1, 0, 0, 0, 2, 0, 1, 1, 2, 2]),
               np.array([0, 0, 0, 0, 0, 0, 1, 0, 2, 0]),
               np.array([0, 1, 0, 0, 0, 2, 1, 1, 1, 2])]


def test_samme_step_matches_reference():
    final, alphas, errors = reference_samme(Y, PREDICTIONS, 3)
    weight = np.full(len(Y), 0.1)
    for predicted, alpha, error in zip(PREDICTIONS, alphas, errors):
        weight, got_alpha, got_error = samme_step(weight, predicted != Y, 3)
        assert got_alpha == pytest.approx(alpha, rel=1e-12)
        assert got_error == pytest.approx(error, rel=1e-12)
    np.testing.assert_allclose(weight, final, rtol=1e-12)
    # the first round: ε = 0.4 -> α = log(1.5) + log(2) = log(3)
    assert alphas[0] == pytest.approx(math.log(3.0))


def test_samme_step_stopping_rules():
    weight = np.full(4, 0.25)
    same, alpha, error = samme_step(weight, np.zeros(4, bool), 3)
    assert (alpha, error) == (1.0, 0.0)
    np.testing.assert_array_equal(same, weight)
    # ε = 1/2 = 1 - 1/K for K = 2: no better than chance
    dropped, alpha, error = samme_step(weight, np.array([True, True, False, False]), 2)
    assert (dropped, alpha, error) == (None, None, 0.5)
    _, shrunk, _ = samme_step(weight, np.array([True, False, False, False]), 2, 0.5)
    assert shrunk == pytest.approx(0.5 * math.log(3.0))


class Lookup(nn.Module):
    """A 'network' whose logits are a fixed one-hot table indexed by x[:, 0]."""

    def __init__(self, predicted, n_classes):
        super().__init__()
        self.logits = np.eye(n_classes, dtype=np.float32)[predicted]

    def forward(self, x):
        return fastdl.Tensor(self.logits[np.asarray(x)[:, 0].astype(np.int64)])


def lookup_boosting(predictions, n_classes=3, **kwargs):
    """Boosting whose round m 'learns' predictions[m] (training does nothing)."""
    rounds = iter(predictions)
    return Boosting(lambda: Lookup(next(rounds), n_classes), n_estimators=len(predictions),
                    train_fn=lambda *args: None, **kwargs)


def index_features(n):
    return np.arange(n, dtype=np.float32)[:, None]


def test_fit_follows_the_reference():
    _, alphas, errors = reference_samme(Y, PREDICTIONS, 3)
    boosting = lookup_boosting(PREDICTIONS).fit(index_features(10), Y)
    np.testing.assert_allclose(boosting.estimator_weights_, alphas, rtol=1e-12)
    np.testing.assert_allclose(boosting.estimator_errors_, errors, rtol=1e-12)
    assert len(boosting.estimators_) == 4
    # the vote, by hand
    votes = np.zeros((10, 3))
    for predicted, alpha in zip(PREDICTIONS, alphas):
        votes[np.arange(10), predicted] += alpha
    np.testing.assert_allclose(boosting.decision_function(index_features(10)),
                               votes / alphas.sum(), rtol=1e-12)
    np.testing.assert_array_equal(boosting.predict(index_features(10)), votes.argmax(1))
    proba = boosting.predict_proba(index_features(10))
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(proba.argmax(axis=1), votes.argmax(1))
    staged = list(boosting.staged_predict(index_features(10)))
    assert len(staged) == 4
    np.testing.assert_array_equal(staged[-1], boosting.predict(index_features(10)))
    np.testing.assert_array_equal(staged[0], PREDICTIONS[0])


def test_labels_need_not_be_zero_based():
    labels = np.array([3, 7, 9])[Y]
    boosting = lookup_boosting(PREDICTIONS).fit(index_features(10), labels)
    np.testing.assert_array_equal(boosting.classes_, [3, 7, 9])
    assert set(boosting.predict(index_features(10))) <= {3, 7, 9}
    assert boosting.score(index_features(10), labels) == \
        np.mean(boosting.predict(index_features(10)) == labels)


def test_perfect_round_stops_with_weight_one():
    boosting = lookup_boosting([PREDICTIONS[0], Y, PREDICTIONS[1]]).fit(index_features(10), Y)
    assert len(boosting.estimators_) == 2
    assert boosting.estimator_weights_[1] == 1.0
    assert boosting.estimator_errors_[1] == 0.0


def test_round_no_better_than_chance_is_dropped():
    # A round wrong on every sample (weighted error 1 >= 2/3) after a useful one.
    bad = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0])
    boosting = lookup_boosting([PREDICTIONS[0], bad, PREDICTIONS[1]]).fit(index_features(10), Y)
    assert len(boosting.estimators_) == 1
    with pytest.raises(ValueError, match="no better than chance"):
        lookup_boosting([bad]).fit(index_features(10), Y)


def test_sample_weight_starts_the_weights():
    # minority samples weigh 3: round 2's two majority mistakes weigh 2 of 18
    start = np.where(Y == 0, 1.0, 3.0)
    boosting = lookup_boosting(PREDICTIONS[1:2]).fit(index_features(10), Y, sample_weight=start)
    assert boosting.estimator_errors_[0] == pytest.approx(2 / 18)


# ---------------------------------------------------------------- weak networks, for real

def imbalanced_blobs(n, seed):
    """Three Gaussian blobs, 80% / 12% / 8%: a weak net sees only the majority."""
    rng = np.random.default_rng(seed)
    counts = [int(n * 0.8), int(n * 0.12), n - int(n * 0.8) - int(n * 0.12)]
    centers = [(0.0, 0.0), (2.0, 2.0), (-2.0, 2.0)]
    x = np.concatenate([rng.normal(c, 1.0, (k, 2)) for c, k in zip(centers, counts)])
    y = np.concatenate([np.full(k, label) for label, k in enumerate(counts)])
    return x.astype(np.float32), y


def one_hidden_unit():
    return nn.Sequential(nn.Linear(2, 1), nn.Tanh(), nn.Linear(1, 3))


def balanced_accuracy(y_true, y_pred):
    return float(np.nanmean(per_class_recall(y_true, y_pred, 3)))


def adam(parameters):
    return optim.Adam(parameters, lr=0.05)


@pytest.mark.parametrize("weighting", ["loss", "sample"])
def test_boosting_weak_nets_beats_one(weighting):
    began = time.perf_counter()
    x, y = imbalanced_blobs(600, seed=0)
    x_test, y_test = imbalanced_blobs(2000, seed=1)
    boosting = Boosting(one_hidden_unit, n_estimators=15, epochs=1, batch_size=32,
                        make_optimizer=adam, weighting=weighting, seed=0).fit(x, y)
    fastdl.manual_seed(0)   # as the first round: the same network, trained alike
    single = train_weighted(one_hidden_unit(), x, y, np.ones(len(y)), epochs=1,
                            batch_size=32, make_optimizer=adam, weighting=weighting)
    single_score = balanced_accuracy(y_test, predict_logits(single, x_test).argmax(axis=1))
    boosted_score = balanced_accuracy(y_test, boosting.predict(x_test))
    assert boosted_score > single_score + 0.1, (single_score, boosted_score)
    assert len(boosting.estimators_) >= 3
    assert time.perf_counter() - began < 15


def test_fit_is_repeatable():
    x, y = imbalanced_blobs(300, seed=2)

    def fit():
        return Boosting(one_hidden_unit, n_estimators=4, epochs=1, make_optimizer=adam,
                        seed=5).fit(x, y)
    first, second = fit(), fit()
    np.testing.assert_array_equal(first.estimator_errors_, second.estimator_errors_)
    np.testing.assert_array_equal(first.predict(x), second.predict(x))


@pytest.mark.parametrize("kwargs, error", [
    ({"n_estimators": 0}, ValueError), ({"learning_rate": 0.0}, ValueError),
    ({"weighting": "boost"}, ValueError), ({"make_model": None}, TypeError)])
def test_bad_arguments(kwargs, error):
    kwargs = dict({"make_model": one_hidden_unit}, **kwargs)
    with pytest.raises(error):
        Boosting(**kwargs)


def test_bad_fit_input():
    boosting = Boosting(one_hidden_unit, n_estimators=1)
    with pytest.raises(ValueError, match="two classes"):
        boosting.fit(np.zeros((4, 2)), np.zeros(4, int))
    with pytest.raises(ValueError, match="samples"):
        boosting.fit(np.zeros((4, 2)), np.array([0, 1, 0]))
    with pytest.raises(ValueError, match="sample_weight"):
        boosting.fit(np.zeros((4, 2)), np.array([0, 1, 0, 1]), sample_weight=-np.ones(4))
    with pytest.raises(RuntimeError, match="fit"):
        Boosting(one_hidden_unit).predict(np.zeros((1, 2)))
