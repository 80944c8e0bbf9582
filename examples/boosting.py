"""Boost weak networks (SAMME) on a small imbalanced set: when it helps, and when it does not.

    python examples/boosting.py [--rounds 15] [--seed 0]

Three Gaussian blobs, 80% / 12% / 8% of the samples. A network with one hidden unit,
trained for one epoch, underfits: it finds the majority class and little else. Boosting
trains a fresh one per round on the samples reweighted toward the mistakes, so the later
rounds learn the minority classes, and the weighted vote recovers them. A network with
enough capacity and training fits the set by itself; boosting it adds little.
"""
import argparse
import time

import numpy as np

import fastdl
from fastdl import nn, optim
from fastdl.train import Boosting, per_class_recall, predict_logits
from fastdl.train.boosting import train_weighted

CLASSES = 3


def imbalanced_blobs(n, seed):
    rng = np.random.default_rng(seed)
    counts = [int(n * 0.8), int(n * 0.12), n - int(n * 0.8) - int(n * 0.12)]
    centers = [(0.0, 0.0), (2.0, 2.0), (-2.0, 2.0)]
    x = np.concatenate([rng.normal(c, 1.0, (k, 2)) for c, k in zip(centers, counts)])
    y = np.concatenate([np.full(k, label) for label, k in enumerate(counts)])
    return x.astype(np.float32), y


def weak_net():
    return nn.Sequential(nn.Linear(2, 1), nn.Tanh(), nn.Linear(1, CLASSES))


def strong_net():
    return nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, CLASSES))


def adam(parameters):
    return optim.Adam(parameters, lr=0.05)


def report(name, y_true, y_pred, seconds):
    recall = per_class_recall(y_true, y_pred, CLASSES)
    print("%-26s %8.3f   %s   %5.2f s" % (name, np.nanmean(recall),
                                         "  ".join("%.2f" % r for r in recall), seconds))


def single(make_model, x, y, epochs, seed):
    began = time.perf_counter()
    fastdl.manual_seed(seed)
    model = train_weighted(make_model(), x, y, np.ones(len(y)), epochs=epochs, batch_size=32,
                           make_optimizer=adam, seed=seed)
    return model, time.perf_counter() - began


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    x, y = imbalanced_blobs(args.train, args.seed)
    x_test, y_test = imbalanced_blobs(4000, args.seed + 1000)
    print("train %d samples, class counts %s; test %d" % (len(y), np.bincount(y), len(y_test)))
    print("%-26s %8s   %s   %7s" % ("model", "bal. acc", "recall per class", "time"))
    for label, make_model, epochs in (("weak (1 hidden unit, 1 ep)", weak_net, 1),
                                      ("strong (32 hidden, 20 ep)", strong_net, 20)):
        model, seconds = single(make_model, x, y, epochs, args.seed)
        report(label.split(" (")[0] + ", single", y_test,
               predict_logits(model, x_test).argmax(axis=1), seconds)
        began = time.perf_counter()
        boosting = Boosting(make_model, n_estimators=args.rounds, epochs=epochs,
                            batch_size=32, make_optimizer=adam, seed=args.seed).fit(x, y)
        report("%s, boosted x%d" % (label.split(" (")[0], len(boosting.estimators_)), y_test,
               boosting.predict(x_test), time.perf_counter() - began)
        if make_model is weak_net:
            staged = [np.nanmean(per_class_recall(y_test, p, CLASSES))
                      for p in boosting.staged_predict(x_test)]
            print("  weak, balanced accuracy after each round: %s"
                  % " ".join("%.2f" % s for s in staged))
            print("  weighted errors: %s" % " ".join("%.2f" % e
                                                     for e in boosting.estimator_errors_))


if __name__ == "__main__":
    main()
