"""Optimizers over flat buffers with one fused update kernel each; clipping; schedules."""
from fastdl.optim import lr_scheduler
from fastdl.optim.algorithms import SGD, Adagrad, Adam, AdamW, RMSprop
from fastdl.optim.clip import clip_grad_norm_, clip_grad_value_
from fastdl.optim.optimizer import Optimizer

__all__ = ["SGD", "Adagrad", "Adam", "AdamW", "Optimizer", "RMSprop", "clip_grad_norm_",
           "clip_grad_value_", "lr_scheduler"]
