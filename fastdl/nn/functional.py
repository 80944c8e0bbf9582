"""``torch.nn.functional``'s path for :mod:`fastdl.functional` (the same module object).

Ported programs write ``import torch.nn.functional as F``; with ``import
fastdl.nn.functional as F`` they get exactly ``fastdl.functional``.
"""
import sys

import fastdl.functional as _functional

sys.modules[__name__] = _functional
