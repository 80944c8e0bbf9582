"""The training workflow: Trainer, callbacks, checkpoints, history, cross-validation, metrics,
boosting."""
from fastdl.train.boosting import Boosting
from fastdl.train.callbacks import Callback, EarlyStopping, ModelCheckpoint
from fastdl.train.checkpoint import load_checkpoint, save_checkpoint
from fastdl.train.crossval import Ensemble, cross_validate
from fastdl.train.history import History
from fastdl.train.metrics import (accuracy, confusion_matrix, mean_iou, per_class_recall,
                                  pixel_accuracy)
from fastdl.train.trainer import Trainer, TrainingDiverged, predict_logits, predict_proba

__all__ = ["Boosting", "Callback", "EarlyStopping", "Ensemble", "History", "ModelCheckpoint",
           "Trainer", "TrainingDiverged", "accuracy", "confusion_matrix", "cross_validate",
           "load_checkpoint", "mean_iou", "per_class_recall", "pixel_accuracy",
           "predict_logits", "predict_proba", "save_checkpoint"]
