"""Run one program text under torch or, with only its import lines changed, under fastdl.

``load_program(path, "fastdl")`` rewrites each line that imports torch:
``import torch`` → ``import fastdl as torch``, ``import torch.X as Y`` →
``import fastdl.X as Y``, ``from torch.X import Y`` → ``from fastdl.X import Y``;
every other line is left as written.
"""
import re
import sys
import types

_IMPORT_AS = re.compile(r"^import torch((?:\.\w+)*) as (\w+)\s*$")
_FROM = re.compile(r"^from torch((?:\.\w+)*) import (.+)$")


def swap_imports(text):
    """The program ``text`` with its torch imports pointing at fastdl.

    Returns
    -------
    text : str
    changed : list of (str, str)
        Each rewritten line before and after.
    """
    lines, changed = [], []
    for line in text.splitlines():
        new = line
        if line.rstrip() == "import torch":
            new = "import fastdl as torch"
        elif _IMPORT_AS.match(line):
            new = _IMPORT_AS.sub(r"import fastdl\1 as \2", line)
        elif _FROM.match(line):
            new = _FROM.sub(r"from fastdl\1 import \2", line)
        if new != line:
            changed.append((line, new))
        lines.append(new)
    return "\n".join(lines) + "\n", changed


def load_program(path, backend):
    """Execute the program at ``path`` as a fresh module, under ``"torch"`` or ``"fastdl"``."""
    with open(path) as f:
        text = f.read()
    if backend == "fastdl":
        text, _ = swap_imports(text)
    elif backend != "torch":
        raise ValueError("backend must be 'torch' or 'fastdl', got %r" % (backend,))
    name = "%s_under_%s" % (re.sub(r"\W", "_", str(path).rsplit("/", 1)[-1][:-3]), backend)
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module   # dataclasses and pickling look their module up
    exec(compile(text, str(path), "exec"), module.__dict__)
    return module
