"""Training checkpoints: model, optimizer, scheduler, epoch, RNG and history in one file.

Arrays go into a safetensors file; everything else into its JSON metadata.
Nothing is pickled, and the write is atomic.
"""
import json

import numpy as np

from fastdl import random as fastdl_random
from fastdl.safetensors_io import load_file, save_file

FORMAT = "fastdl-checkpoint-1"


def save_checkpoint(path, model, optimizer=None, scheduler=None, extra=None):
    """Write ``model`` (+ optimizer/scheduler state and ``extra`` JSON data) to ``path``."""
    tensors = {"model." + k: np.asarray(v) for k, v in model.state_dict().items()}
    meta = {"format": FORMAT, "extra": extra or {},
            "rng": fastdl_random.get_rng_state()}
    if optimizer is not None:
        state = optimizer.state_dict()
        for index, entry in state["state"].items():
            for name, value in entry.items():
                if isinstance(value, np.ndarray):
                    tensors["optimizer.%d.%s" % (index, name)] = value
        meta["optimizer"] = {
            "param_groups": state["param_groups"],
            "steps": {str(i): e["step"] for i, e in state["state"].items()}}
    if scheduler is not None:
        meta["scheduler"] = scheduler.state_dict()
    save_file(tensors, path, metadata={"fastdl": json.dumps(meta, default=_plain)})


def _plain(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return list(value)
    raise TypeError("not JSON-serialisable: %r" % (value,))


def load_checkpoint(path, model, optimizer=None, scheduler=None):
    """Restore what :func:`save_checkpoint` wrote; return its ``extra`` dict.

    Raises
    ------
    ValueError
        Not a fastdl checkpoint, or it does not fit the model/optimizer.
    """
    tensors, metadata = load_file(path)
    try:
        meta = json.loads(metadata["fastdl"])
    except (KeyError, ValueError):
        raise ValueError("%s is not a fastdl checkpoint (no metadata)" % path) from None
    if meta.get("format") != FORMAT:
        raise ValueError("%s: unknown checkpoint format %r" % (path, meta.get("format")))
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items()
                           if k.startswith("model.")})
    if optimizer is not None and "optimizer" in meta:
        state = {}
        for index, step in meta["optimizer"]["steps"].items():
            entry = {"step": step}
            for name in optimizer.state_slots:
                entry[name] = tensors["optimizer.%s.%s" % (index, name)]
            state[int(index)] = entry
        groups = meta["optimizer"]["param_groups"]
        for group in groups:
            if "betas" in group:
                group["betas"] = tuple(group["betas"])
        optimizer.load_state_dict({"state": state, "param_groups": groups})
    if scheduler is not None and "scheduler" in meta:
        scheduler.load_state_dict(meta["scheduler"])
    state = meta.get("rng")
    if state is not None:
        fastdl_random.set_rng_state(state)
    return meta.get("extra", {})
