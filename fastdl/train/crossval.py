"""k-fold cross-validation and the averaged-softmax ensemble of its fold models."""
import numpy as np

from fastdl.data import DataLoader, Subset, kfold_split
from fastdl.train.metrics import accuracy
from fastdl.train.trainer import Trainer, predict_proba


class Ensemble:
    """Average the softmax outputs of several models (bagging)."""

    def __init__(self, models):
        self.models = list(models)
        if not self.models:
            raise ValueError("Ensemble: needs at least one model")

    def predict_proba(self, x):
        return np.mean([predict_proba(model, x) for model in self.models], axis=0)

    def predict(self, x):
        return self.predict_proba(x).argmax(axis=1)


def cross_validate(make_model, dataset, k, make_optimizer, loss_fn, epochs=1, batch_size=64,
                   seed=0):
    """Train one fresh model per fold; score each on its held-out fold.

    Parameters
    ----------
    make_model : callable ``() -> Module``
    dataset : TensorDataset (x, y)
    make_optimizer : callable ``(parameters) -> Optimizer``

    Returns
    -------
    fold_metrics : list of dict (``accuracy``, ``loss`` per fold)
    ensemble : Ensemble of the k fold models
    """
    labels = dataset.targets
    models, scores = [], []
    for fold, (train_idx, val_idx) in enumerate(kfold_split(len(dataset), k, seed,
                                                            stratify=labels)):
        model = make_model()
        trainer = Trainer(model, make_optimizer(model.parameters()), loss_fn, progress=False)
        trainer.fit(DataLoader(Subset(dataset, train_idx), batch_size, shuffle=True,
                               seed=seed + fold), epochs=epochs)
        result = trainer.evaluate(DataLoader(Subset(dataset, val_idx), 256))
        scores.append({"fold": fold, "loss": result["loss"],
                       "accuracy": accuracy(result["y_true"], result["y_pred"])})
        models.append(model)
    return scores, Ensemble(models)
