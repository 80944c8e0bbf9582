"""The training workflow: Trainer, callbacks, checkpoints, history, cross-validation."""
from fastdl.train.callbacks import Callback, EarlyStopping, ModelCheckpoint
from fastdl.train.checkpoint import load_checkpoint, save_checkpoint
from fastdl.train.crossval import Ensemble, cross_validate
from fastdl.train.history import History
from fastdl.train.metrics import accuracy, confusion_matrix, per_class_recall
from fastdl.train.trainer import Trainer, TrainingDiverged, predict_logits, predict_proba

__all__ = ["Callback", "EarlyStopping", "Ensemble", "History", "ModelCheckpoint", "Trainer",
           "TrainingDiverged", "accuracy", "confusion_matrix", "cross_validate",
           "load_checkpoint", "per_class_recall", "predict_logits", "predict_proba",
           "save_checkpoint"]
