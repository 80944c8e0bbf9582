"""Run a torch program's text under torch or, with only its import lines changed, under fastdl.

``load_program(path, "fastdl")`` rewrites each line that imports torch
(``import torch`` -> ``import fastdl as torch``, ``import torch.X as Y`` ->
``import fastdl.X as Y``, ``from torch.X import Y`` -> ``from fastdl.X import Y``)
and leaves every other line as written, so a benchmark written once in torch's
idiom times the same calls in both libraries.
"""
import os
import re
import sys
import types

__all__ = ["swap_imports", "load_program", "MODEL_PROGRAM"]

MODEL_PROGRAM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cifar_models.py")

_IMPORT_AS = re.compile(r"^import torch((?:\.\w+)*) as (\w+)\s*$")
_FROM = re.compile(r"^from torch((?:\.\w+)*) import (.+)$")


def swap_imports(text):
    """``text`` with its torch import lines pointing at fastdl; the other lines unchanged."""
    lines = []
    for line in text.splitlines():
        if line.rstrip() == "import torch":
            line = "import fastdl as torch"
        elif _IMPORT_AS.match(line):
            line = _IMPORT_AS.sub(r"import fastdl\1 as \2", line)
        elif _FROM.match(line):
            line = _FROM.sub(r"from fastdl\1 import \2", line)
        lines.append(line)
    return "\n".join(lines) + "\n"


def load_program(path, library):
    """Execute the program at ``path`` as a fresh module under ``"torch"`` or ``"fastdl"``."""
    if library not in ("torch", "fastdl"):
        raise ValueError("library must be 'torch' or 'fastdl', got %r" % (library,))
    with open(path) as f:
        text = f.read()
    if library == "fastdl":
        text = swap_imports(text)
    name = "fastdl_bench_program_%s_%s" % (re.sub(r"\W", "_", os.path.basename(path)[:-3]),
                                           library)
    module = types.ModuleType(name)
    module.__file__ = path
    sys.modules[name] = module
    exec(compile(text, path, "exec"), module.__dict__)
    return module
