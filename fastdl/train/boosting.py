"""Boosting of small networks: SAMME, the multi-class AdaBoost.

Boosting is a remedy for underfitting: each round trains a fresh, weak network on the
training set reweighted toward the samples the previous rounds got wrong, and the rounds
vote with weights that grow with their accuracy (Zhu, Zou, Rosset and Hastie, "Multi-class
AdaBoost", 2009; scikit-learn's ``AdaBoostClassifier``, whose attribute names we keep).

For K classes and sample weights w summing to 1, round m with predictions h_m:

    ε_m = Σ_i w_i 1[h_m(x_i) ≠ y_i]                    (weighted error)
    α_m = η (log((1 − ε_m) / ε_m) + log(K − 1))        (learner weight; η: learning_rate)
    w_i ← w_i exp(α_m 1[h_m(x_i) ≠ y_i]),  then w ← w / Σ w

A round no better than chance (ε ≥ 1 − 1/K) is dropped and boosting stops; a perfect round
(ε = 0) is kept with weight 1 and boosting stops. The ensemble predicts
argmax_k Σ_m α_m 1[h_m(x) = k].
"""
import math
import numbers

import numpy as np

from fastdl import autograd
from fastdl.data import DataLoader, TensorDataset, WeightedRandomSampler
from fastdl.functional import cross_entropy, softmax
from fastdl.optim import Adam
from fastdl.random import manual_seed
from fastdl.train.metrics import accuracy
from fastdl.train.trainer import predict_logits

__all__ = ["Boosting", "samme_step", "train_weighted"]


def samme_step(sample_weight, incorrect, n_classes, learning_rate=1.0):
    """One SAMME reweighting.

    Parameters
    ----------
    sample_weight : (N,) float, non-negative, summing to 1
    incorrect : (N,) bool, the round's mistakes
    n_classes : int, K >= 2
    learning_rate : float > 0, η

    Returns
    -------
    new_weight : (N,) float summing to 1, or None when the round is no better than chance
    alpha : float, the round's weight (1.0 for a perfect round, None when dropped)
    error : float, the weighted error ε
    """
    sample_weight = np.asarray(sample_weight, dtype=np.float64)
    incorrect = np.asarray(incorrect, dtype=bool)
    error = float(np.sum(sample_weight[incorrect]) / np.sum(sample_weight))
    if error <= 0.0:
        return sample_weight.copy(), 1.0, 0.0
    if error >= 1.0 - 1.0 / n_classes:
        return None, None, error
    alpha = learning_rate * (math.log((1.0 - error) / error) + math.log(n_classes - 1.0))
    new_weight = sample_weight * np.exp(alpha * incorrect)
    return new_weight / new_weight.sum(), alpha, error


def train_weighted(model, x, y, sample_weight, epochs=2, batch_size=64, make_optimizer=None,
                   weighting="loss", seed=0):
    """Train ``model`` in place on ``(x, y)`` weighted by ``sample_weight``.

    Parameters
    ----------
    model : nn.Module returning logits (N, K)
    x : (N, ...) float array; y : (N,) int class indices in [0, K)
    sample_weight : (N,) non-negative float
    epochs, batch_size : int
    make_optimizer : callable ``(parameters) -> Optimizer``; default Adam(lr=1e-2)
    weighting : {'loss', 'sample'}
        'loss': the mean over a batch of ``N w_i · cross_entropy_i`` (weights scaled to
        mean 1); 'sample': batches drawn with probability proportional to the weights
        (``WeightedRandomSampler``, N draws with replacement per epoch) and a plain loss.
    seed : int, the batch order
    """
    make_optimizer = make_optimizer or (lambda parameters: Adam(parameters, lr=1e-2))
    optimizer = make_optimizer(model.parameters())
    scaled = np.asarray(sample_weight, np.float64) * (len(y) / np.sum(sample_weight))
    if weighting == "sample":
        sampler = WeightedRandomSampler(scaled, len(y))
        loader = DataLoader(TensorDataset(x, y, np.ones(len(y))), batch_size, sampler=sampler,
                            seed=seed)
    else:
        loader = DataLoader(TensorDataset(x, y, scaled), batch_size, shuffle=True, seed=seed)
    model.train()
    for epoch in range(epochs):
        loader.set_epoch(epoch)
        for x_batch, y_batch, w_batch in loader:
            optimizer.zero_grad()
            losses = cross_entropy(model(x_batch), np.asarray(y_batch), reduction="none")
            weights = autograd.Tensor(np.asarray(w_batch, dtype=losses.dtype))
            (losses * weights).mean().backward()
            optimizer.step()
    return model


class Boosting:
    """SAMME boosting of networks, a fresh one per round (see the module's docstring).

    Parameters
    ----------
    make_model : callable ``() -> nn.Module`` returning logits (N, K)
    n_estimators : int, the most rounds
    epochs, batch_size, make_optimizer, weighting
        How each round trains (:func:`train_weighted`).
    learning_rate : float > 0, η, shrinks every α
    train_fn : callable ``(model, x, y, sample_weight, seed) -> None``, optional
        Trains a round's model in place instead of :func:`train_weighted`.
    seed : int or None
        When given, fastdl's global generator is seeded with ``seed + round`` before each
        round's model is built, and each round's batch order too: ``fit`` is repeatable.

    Attributes
    ----------
    estimators_ : list of Module, the kept rounds' networks
    estimator_weights_ : (M,) float, their α
    estimator_errors_ : (M,) float, their weighted error ε
    classes_ : (K,) the labels, in the networks' output order
    n_classes_ : int
    """

    def __init__(self, make_model, n_estimators=10, epochs=2, batch_size=64,
                 make_optimizer=None, weighting="loss", learning_rate=1.0, train_fn=None,
                 seed=0):
        if not callable(make_model):
            raise TypeError("Boosting: make_model must be a callable returning a Module")
        if not isinstance(n_estimators, numbers.Integral) or n_estimators < 1:
            raise ValueError("Boosting: n_estimators must be a positive int, got %r"
                             % (n_estimators,))
        if not isinstance(learning_rate, numbers.Real) or not learning_rate > 0:
            raise ValueError("Boosting: learning_rate must be positive, got %r"
                             % (learning_rate,))
        if weighting not in ("loss", "sample"):
            raise ValueError("Boosting: weighting must be 'loss' or 'sample', got %r"
                             % (weighting,))
        self.make_model, self.n_estimators = make_model, int(n_estimators)
        self.epochs, self.batch_size, self.make_optimizer = epochs, batch_size, make_optimizer
        self.weighting, self.learning_rate = weighting, float(learning_rate)
        self.train_fn, self.seed = train_fn, seed

    def fit(self, x, y, sample_weight=None):
        """Boost on ``x (N, ...)`` and labels ``y (N,)``; returns self.

        Raises
        ------
        ValueError
            Fewer than two classes, mismatched lengths, bad weights, or a first round no
            better than chance.
        """
        x = np.ascontiguousarray(x, dtype=np.float32)
        self.classes_, y_index = np.unique(np.asarray(y), return_inverse=True)
        y_index = y_index.reshape(-1).astype(np.int64)
        self.n_classes_ = len(self.classes_)
        if self.n_classes_ < 2:
            raise ValueError("Boosting.fit: needs at least two classes, got %d"
                             % self.n_classes_)
        if len(x) != len(y_index):
            raise ValueError("Boosting.fit: x has %d samples but y has %d"
                             % (len(x), len(y_index)))
        weight = _initial_weights(sample_weight, len(y_index))
        self.estimators_, weights, errors = [], [], []
        for round_ in range(self.n_estimators):
            model = self._train_round(x, y_index, weight, round_)
            incorrect = predict_logits(model, x).argmax(axis=1) != y_index
            new_weight, alpha, error = samme_step(weight, incorrect, self.n_classes_,
                                                  self.learning_rate)
            if new_weight is None:   # no better than chance: drop it and stop
                if not self.estimators_:
                    raise ValueError("Boosting.fit: the first round is no better than "
                                     "chance (weighted error %.3f >= %.3f); make the model "
                                     "or its training stronger"
                                     % (error, 1 - 1 / self.n_classes_))
                break
            self.estimators_.append(model)
            weights.append(alpha)
            errors.append(error)
            if error == 0.0:
                break
            weight = new_weight
        self.estimator_weights_ = np.array(weights)
        self.estimator_errors_ = np.array(errors)
        return self

    def _train_round(self, x, y_index, weight, round_):
        seed = None if self.seed is None else self.seed + round_
        if seed is not None:
            manual_seed(seed)
        model = self.make_model()
        if self.train_fn is not None:
            self.train_fn(model, x, y_index, weight, seed)
        else:
            train_weighted(model, x, y_index, weight, self.epochs, self.batch_size,
                           self.make_optimizer, self.weighting, seed or 0)
        return model

    def _votes(self, x, estimators):
        x = np.ascontiguousarray(x, dtype=np.float32)
        votes = np.zeros((len(x), self.n_classes_))
        for model, alpha in estimators:
            predicted = predict_logits(model, x).argmax(axis=1)
            votes[np.arange(len(x)), predicted] += alpha
        return votes

    def decision_function(self, x):
        """``(N, K)`` weighted votes, divided by the sum of the learner weights."""
        self._check_fitted()
        estimators = zip(self.estimators_, self.estimator_weights_)
        return self._votes(x, estimators) / self.estimator_weights_.sum()

    def predict_proba(self, x):
        """``(N, K)`` softmax of the decision divided by K − 1 (scikit-learn's SAMME)."""
        decision = self.decision_function(x) / (self.n_classes_ - 1)
        return softmax(decision, 1).numpy()

    def predict(self, x):
        """``(N,)`` labels of the weighted vote."""
        self._check_fitted()
        return self.classes_[self.decision_function(x).argmax(axis=1)]

    def staged_predict(self, x):
        """The ensemble's labels after each round, as a generator."""
        self._check_fitted()
        estimators = list(zip(self.estimators_, self.estimator_weights_))
        for rounds in range(1, len(estimators) + 1):
            yield self.classes_[self._votes(x, estimators[:rounds]).argmax(axis=1)]

    def score(self, x, y):
        """Accuracy of :meth:`predict` on ``(x, y)``."""
        return accuracy(np.asarray(y), self.predict(x))

    def _check_fitted(self):
        if not hasattr(self, "estimators_"):
            raise RuntimeError("Boosting: call fit before predicting")


def _initial_weights(sample_weight, n):
    if sample_weight is None:
        return np.full(n, 1.0 / n)
    weight = np.asarray(sample_weight, dtype=np.float64)
    if weight.shape != (n,) or np.any(weight < 0) or not np.isfinite(weight).all() \
            or weight.sum() <= 0:
        raise ValueError("Boosting.fit: sample_weight must be (%d,) finite non-negative "
                         "numbers with a positive sum" % n)
    return weight / weight.sum()
