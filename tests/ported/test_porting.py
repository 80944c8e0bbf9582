"""The import swap the ported programs rely on, and the torch-path aliases it needs."""
import fastdl
from porting import swap_imports


def test_only_torch_import_lines_change():
    text = ("import math\nimport torch\nimport torch.nn as nn\n"
            "import torch.nn.functional as F\nimport torch.optim as optim\n"
            "from torch.optim.lr_scheduler import StepLR\n"
            "from torch.utils.data import DataLoader, TensorDataset\n"
            "x = torch.zeros(2)  # import torch\n")
    swapped, changed = swap_imports(text)
    assert swapped.splitlines() == [
        "import math", "import fastdl as torch", "import fastdl.nn as nn",
        "import fastdl.nn.functional as F", "import fastdl.optim as optim",
        "from fastdl.optim.lr_scheduler import StepLR",
        "from fastdl.utils.data import DataLoader, TensorDataset",
        "x = torch.zeros(2)  # import torch"]
    assert len(changed) == 6


def test_nn_functional_is_functional():
    import fastdl.functional
    import fastdl.nn.functional as F
    from fastdl.nn import functional
    assert F is fastdl.functional is functional is fastdl.nn.functional
