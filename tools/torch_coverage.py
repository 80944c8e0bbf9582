"""Which of the torch names a CPU CNN program uses does fastdl have, and do they agree?

The lists below are what image-classification and segmentation programs (the
pytorch/examples programs, tutorials, CIFAR/ImageNet model zoos, training scripts)
call: 191 names of ``torch.nn``, ``torch.nn.functional``, ``torch.nn.init``,
``torch.optim`` and ``torch.optim.lr_scheduler`` (with the Module, Optimizer and
scheduler methods those programs call), and 85 Tensor methods and ``torch.*``
functions. They were chosen for being common in such programs, not for being in
fastdl. Each name is looked up in fastdl by the same path (``torch.nn.X`` →
``fastdl.nn.X``, ``torch.Tensor.X`` → an attribute of a fastdl Tensor); where torch
is installed, the names with a smoke case below are also called in both libraries
on the same small inputs and compared.

    python tools/torch_coverage.py                  # summary per namespace (Markdown)
    python tools/torch_coverage.py --full           # one row per name
    python tools/torch_coverage.py --update-readme  # rewrite README's coverage section
"""
import argparse
import importlib
import os
import sys

import numpy as np

NN = {
    "torch.nn": [
        # containers and parameters
        "Module", "Sequential", "ModuleList", "ModuleDict", "Parameter", "ParameterList",
        "ParameterDict", "Identity",
        # convolution, linear, shape
        "Conv1d", "Conv2d", "ConvTranspose1d", "ConvTranspose2d", "Linear", "Flatten",
        "Unflatten", "Embedding", "Unfold",
        # pooling
        "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d", "AdaptiveAvgPool1d",
        "AdaptiveAvgPool2d", "AdaptiveMaxPool2d",
        # normalisation and dropout
        "BatchNorm1d", "BatchNorm2d", "GroupNorm", "LayerNorm", "InstanceNorm1d",
        "InstanceNorm2d", "LocalResponseNorm", "Dropout", "Dropout1d", "Dropout2d",
        # activations
        "ReLU", "ReLU6", "LeakyReLU", "PReLU", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish",
        "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Softmin", "Softplus", "Hardtanh",
        "Hardswish", "Hardsigmoid", "LogSigmoid",
        # resizing and padding
        "Upsample", "UpsamplingBilinear2d", "PixelShuffle", "PixelUnshuffle", "ZeroPad2d",
        "ReflectionPad2d",
        # losses
        "CrossEntropyLoss", "NLLLoss", "MSELoss", "L1Loss", "SmoothL1Loss", "HuberLoss",
        "BCELoss", "BCEWithLogitsLoss", "KLDivLoss", "CosineEmbeddingLoss",
        "TripletMarginLoss", "MultiLabelSoftMarginLoss",
    ],
    "torch.nn.Module": [
        "forward", "parameters", "named_parameters", "buffers", "children",
        "named_children", "modules", "named_modules", "state_dict", "load_state_dict",
        "train", "eval", "to", "cpu", "cuda", "zero_grad", "apply", "register_buffer",
        "register_forward_hook", "training",
    ],
    "torch.nn.functional": [
        "relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "mish", "sigmoid",
        "tanh", "softmax", "log_softmax", "softplus", "hardtanh", "hardswish",
        "hardsigmoid", "logsigmoid", "conv1d", "conv2d", "conv_transpose2d", "linear",
        "max_pool2d", "avg_pool2d", "adaptive_avg_pool2d", "adaptive_max_pool2d",
        "batch_norm", "layer_norm", "group_norm", "instance_norm", "dropout", "dropout2d",
        "interpolate", "pad", "pixel_shuffle", "one_hot", "embedding", "normalize",
        "cosine_similarity", "unfold", "grid_sample", "affine_grid", "cross_entropy",
        "nll_loss", "mse_loss", "l1_loss", "smooth_l1_loss", "binary_cross_entropy",
        "binary_cross_entropy_with_logits", "kl_div",
    ],
    "torch.nn.init": [
        "kaiming_normal_", "kaiming_uniform_", "xavier_normal_", "xavier_uniform_",
        "normal_", "uniform_", "constant_", "zeros_", "ones_", "orthogonal_",
        "trunc_normal_",
    ],
    "torch.nn.utils": ["clip_grad_norm_", "clip_grad_value_"],
    "torch.optim": [
        "Optimizer", "SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax",
        "NAdam", "RAdam", "LBFGS",
    ],
    "torch.optim.Optimizer": [
        "zero_grad", "step", "state_dict", "load_state_dict", "add_param_group",
        "param_groups", "state",
    ],
    "torch.optim.lr_scheduler": [
        "LRScheduler", "StepLR", "MultiStepLR", "ExponentialLR", "CosineAnnealingLR",
        "CosineAnnealingWarmRestarts", "ReduceLROnPlateau", "OneCycleLR", "CyclicLR",
        "LambdaLR", "MultiplicativeLR", "LinearLR", "ConstantLR", "PolynomialLR",
        "SequentialLR",
    ],
    "torch.optim.lr_scheduler.StepLR": ["step", "get_last_lr", "state_dict",
                                        "load_state_dict"],
}

TENSOR = {
    "torch.Tensor": [
        # shape
        "view", "view_as", "reshape", "permute", "transpose", "flatten", "squeeze",
        "unsqueeze", "contiguous", "repeat", "size", "shape", "numel",
        # reductions and comparisons
        "sum", "mean", "max", "min", "argmax", "std", "norm", "topk", "sort", "eq", "gt",
        # math
        "abs", "exp", "log", "sqrt", "pow", "clamp", "sigmoid", "softmax",
        # conversions and devices
        "item", "tolist", "numpy", "to", "cpu", "cuda", "float", "long", "dtype", "device",
        # autograd and in-place
        "detach", "clone", "backward", "grad", "requires_grad", "data", "zero_", "mul_",
        "uniform_", "normal_", "bernoulli_",
    ],
    "torch": [
        "tensor", "from_numpy", "zeros", "ones", "zeros_like", "ones_like", "empty",
        "arange", "randn", "rand", "randperm", "cat", "stack", "flatten", "max", "argmax",
        "sum", "mean", "exp", "sigmoid", "softmax", "matmul", "where", "no_grad",
        "manual_seed", "device", "save", "load", "float32", "set_grad_enabled",
        "cuda.is_available", "backends.cudnn",
    ],
}

_X = np.random.default_rng(0).normal(size=(2, 3, 4, 4)).astype(np.float32)
_LOGITS = np.random.default_rng(1).normal(size=(4, 5)).astype(np.float32)
_LABELS = np.array([0, 3, 1, 4], dtype=np.int64)
_PROBS = 1.0 / (1.0 + np.exp(-_LOGITS))


def _activation_layers():
    return {"torch.nn." + name: (lambda t, n=name: getattr(t.nn, n)()(t.tensor(_X)))
            for name in ["ReLU", "ReLU6", "ELU", "SELU", "CELU", "GELU", "SiLU", "Mish",
                         "Sigmoid", "Tanh", "Softplus", "Hardtanh", "Hardswish",
                         "Hardsigmoid", "LogSigmoid", "LeakyReLU", "Identity", "Flatten"]}


def _activation_functions():
    return {"torch.nn.functional." + name: (lambda t, n=name: getattr(t.nn.functional, n)(
        t.tensor(_X))) for name in ["relu", "relu6", "elu", "selu", "gelu", "silu", "mish",
                                    "sigmoid", "tanh", "softplus", "hardtanh", "hardswish",
                                    "hardsigmoid", "logsigmoid", "leaky_relu"]}


def _tensor_methods():
    cases = {name: (lambda x, n=name: getattr(x, n)())
             for name in ["sum", "mean", "std", "abs", "sigmoid", "flatten", "clone",
                          "contiguous", "detach", "numel", "tolist", "float", "long"]}
    cases.update({
        "view": lambda x: x.view(2, -1), "reshape": lambda x: x.reshape(6, -1),
        "permute": lambda x: x.permute(0, 2, 3, 1), "transpose": lambda x: x.transpose(1, 3),
        "squeeze": lambda x: x[:1].squeeze(0), "unsqueeze": lambda x: x.unsqueeze(1),
        "repeat": lambda x: x.repeat(1, 2, 1, 1),
        "size": lambda x: x.size(1), "shape": lambda x: tuple(x.shape),
        "max": lambda x: x.max(dim=1)[0], "min": lambda x: x.min(dim=1)[1],
        "argmax": lambda x: x.argmax(dim=1, keepdim=True),
        "norm": lambda x: x.norm(), "topk": lambda x: x.flatten(1).topk(3, dim=1)[1],
        "sort": lambda x: x.sort(dim=-1)[0], "eq": lambda x: x.eq(x[:1]),
        "gt": lambda x: x.gt(0),
        "exp": lambda x: x.exp(), "log": lambda x: x.abs().log(), "sqrt": lambda x: x.abs().sqrt(),
        "pow": lambda x: x.pow(2), "clamp": lambda x: x.clamp(-0.5, 0.5),
        "softmax": lambda x: x.softmax(dim=1),
        "item": lambda x: x.sum().item(), "numpy": lambda x: x.numpy(),
        "to": lambda x: x.to("cpu"), "cpu": lambda x: x.cpu(), "view_as": lambda x: x.view_as(x),
    })
    return {"torch.Tensor." + name: (lambda t, f=f: f(t.tensor(_X))) for name, f in
            cases.items()}


def _other_cases():
    loss_cases = {
        "cross_entropy": lambda t, F: F.cross_entropy(t.tensor(_LOGITS), t.tensor(_LABELS)),
        "nll_loss": lambda t, F: F.nll_loss(F.log_softmax(t.tensor(_LOGITS), dim=1),
                                            t.tensor(_LABELS)),
        "mse_loss": lambda t, F: F.mse_loss(t.tensor(_LOGITS), t.tensor(_PROBS)),
        "l1_loss": lambda t, F: F.l1_loss(t.tensor(_LOGITS), t.tensor(_PROBS)),
        "smooth_l1_loss": lambda t, F: F.smooth_l1_loss(t.tensor(_LOGITS), t.tensor(_PROBS)),
        "binary_cross_entropy": lambda t, F: F.binary_cross_entropy(t.tensor(_PROBS),
                                                                    t.tensor(_PROBS ** 2)),
        "binary_cross_entropy_with_logits": lambda t, F: F.binary_cross_entropy_with_logits(
            t.tensor(_LOGITS), t.tensor(_PROBS)),
        "softmax": lambda t, F: F.softmax(t.tensor(_X), dim=1),
        "log_softmax": lambda t, F: F.log_softmax(t.tensor(_X), dim=1),
        "max_pool2d": lambda t, F: F.max_pool2d(t.tensor(_X), 2),
        "avg_pool2d": lambda t, F: F.avg_pool2d(t.tensor(_X), 3, stride=1, padding=1),
        "adaptive_avg_pool2d": lambda t, F: F.adaptive_avg_pool2d(t.tensor(_X), (1, 1)),
        "adaptive_max_pool2d": lambda t, F: F.adaptive_max_pool2d(t.tensor(_X), 2),
        "interpolate": lambda t, F: F.interpolate(t.tensor(_X), scale_factor=2,
                                                  mode="bilinear", align_corners=False),
        "pad": lambda t, F: F.pad(t.tensor(_X), (1, 2, 0, 1), mode="reflect"),
        "pixel_shuffle": lambda t, F: F.pixel_shuffle(t.tensor(_X[:, :1].repeat(4, 1)), 2),
        "one_hot": lambda t, F: F.one_hot(t.tensor(_LABELS), 5),
        "normalize": lambda t, F: F.normalize(t.tensor(_LOGITS), dim=1),
        "dropout": lambda t, F: F.dropout(t.tensor(_X), 0.5, training=False),
    }
    cases = {"torch.nn.functional." + name: (lambda t, f=f: f(t, t.nn.functional))
             for name, f in loss_cases.items()}
    cases.update({
        "torch.cat": lambda t: t.cat([t.tensor(_X), t.tensor(_X)], 1),
        "torch.stack": lambda t: t.stack([t.tensor(_X), t.tensor(_X)]),
        "torch.flatten": lambda t: t.flatten(t.tensor(_X), 1),
        "torch.max": lambda t: t.max(t.tensor(_X)),
        "torch.argmax": lambda t: t.argmax(t.tensor(_X), dim=1),
        "torch.sum": lambda t: t.sum(t.tensor(_X), dim=(2, 3)),
        "torch.mean": lambda t: t.mean(t.tensor(_X)),
        "torch.exp": lambda t: t.exp(t.tensor(_X)),
        "torch.sigmoid": lambda t: t.sigmoid(t.tensor(_X)),
        "torch.softmax": lambda t: t.softmax(t.tensor(_X), dim=1),
        "torch.matmul": lambda t: t.matmul(t.tensor(_LOGITS), t.tensor(_LOGITS.T)),
        "torch.where": lambda t: t.where(t.tensor(_X) > 0, t.tensor(_X), t.zeros(1)),
        "torch.zeros": lambda t: t.zeros(2, 3), "torch.ones": lambda t: t.ones((2, 3)),
        "torch.arange": lambda t: t.arange(0, 10, 3),
        "torch.from_numpy": lambda t: t.from_numpy(_X),
        "torch.nn.MaxPool2d": lambda t: t.nn.MaxPool2d(3, stride=2, padding=1)(t.tensor(_X)),
        "torch.nn.AvgPool2d": lambda t: t.nn.AvgPool2d(2)(t.tensor(_X)),
        "torch.nn.AdaptiveAvgPool2d": lambda t: t.nn.AdaptiveAvgPool2d(1)(t.tensor(_X)),
        "torch.nn.Softmax": lambda t: t.nn.Softmax(dim=1)(t.tensor(_X)),
        "torch.nn.LogSoftmax": lambda t: t.nn.LogSoftmax(dim=1)(t.tensor(_X)),
        "torch.nn.Upsample": lambda t: t.nn.Upsample(scale_factor=2)(t.tensor(_X)),
        "torch.nn.PixelShuffle": lambda t: t.nn.PixelShuffle(1)(t.tensor(_X)),
        "torch.nn.ZeroPad2d": lambda t: t.nn.ZeroPad2d(1)(t.tensor(_X)),
        "torch.nn.CrossEntropyLoss": lambda t: t.nn.CrossEntropyLoss(label_smoothing=0.1)(
            t.tensor(_LOGITS), t.tensor(_LABELS)),
        "torch.nn.NLLLoss": lambda t: t.nn.NLLLoss()(t.tensor(_LOGITS), t.tensor(_LABELS)),
        "torch.nn.MSELoss": lambda t: t.nn.MSELoss()(t.tensor(_LOGITS), t.tensor(_PROBS)),
        "torch.nn.BCEWithLogitsLoss": lambda t: t.nn.BCEWithLogitsLoss()(
            t.tensor(_LOGITS), t.tensor(_PROBS)),
    })
    return cases


def smoke_cases():
    """name → function(lib) returning a value to compare between torch and fastdl."""
    cases = _activation_layers()
    cases.update(_activation_functions())
    cases.update(_tensor_methods())
    cases.update(_other_cases())
    return cases


def all_names():
    """(group, full name) pairs: group 'nn' (the 191) or 'tensor' (the 85)."""
    rows = []
    for group, table in (("nn", NN), ("tensor", TENSOR)):
        for namespace, names in table.items():
            rows += [(group, namespace + "." + name) for name in names]
    return rows


def _instance_of(fastdl, namespace):
    """An object to look ``namespace.X`` attributes up on, for class namespaces."""
    if namespace == "torch.Tensor":
        return fastdl.Tensor(np.ones((2, 3), np.float32))
    if namespace == "torch.nn.Module":
        return fastdl.nn.Linear(2, 2)
    parameters = [fastdl.nn.Parameter(np.zeros(2, np.float32))]
    if namespace == "torch.optim.Optimizer":
        return fastdl.optim.SGD(parameters, lr=0.1)
    if namespace == "torch.optim.lr_scheduler.StepLR":
        return fastdl.optim.lr_scheduler.StepLR(fastdl.optim.SGD(parameters, lr=0.1), 1)
    return None


def resolve(fastdl, full_name):
    """Whether fastdl has ``full_name`` (``torch.`` replaced by ``fastdl.``)."""
    namespaces = [ns for ns in list(NN) + list(TENSOR) if full_name.startswith(ns + ".")]
    namespace = max(namespaces, key=len)
    rest = full_name[len(namespace) + 1:]
    try:
        target = _instance_of(fastdl, namespace)
        if target is None:
            module_path = "fastdl" + namespace[len("torch"):]
            target = importlib.import_module(module_path)
    except Exception:
        return False
    for part in rest.split("."):
        try:
            target = getattr(target, part)
        except Exception:
            return False
    return True


def _as_array(value):
    if isinstance(value, (tuple, list)) and value and not np.isscalar(value[0]):
        value = value[0]
    if hasattr(value, "detach"):
        value = value.detach()
    if hasattr(value, "numpy"):
        value = value.numpy()
    return np.asarray(value, dtype=np.float64)


def smoke(torch, fastdl, name, case):
    """'ok', 'differs (max error e)', 'error: Type', or '' when torch itself fails."""
    try:
        expected = _as_array(case(torch))
    except Exception:
        return ""
    try:
        got = _as_array(case(fastdl))
    except Exception as error:
        return "error: %s" % type(error).__name__
    if got.shape != expected.shape:
        return "differs (shape %s vs %s)" % (got.shape, expected.shape)
    error = float(np.max(np.abs(got - expected), initial=0.0))
    if error <= 1e-5 * max(1.0, float(np.max(np.abs(expected), initial=0.0))):
        return "ok"
    return "differs (max error %.1e)" % error


def measure(fastdl, torch=None):
    """One row per name: dict(group, name, present, smoke)."""
    cases = smoke_cases() if torch is not None else {}
    rows = []
    for group, name in all_names():
        present = resolve(fastdl, name)
        check = smoke(torch, fastdl, name, cases[name]) if present and name in cases else ""
        rows.append({"group": group, "name": name, "present": present, "smoke": check})
    return rows


def summarize(rows):
    """Per namespace: (namespace, present, total, missing names), in list order."""
    summary = {}
    for row in rows:
        namespace, _, short = row["name"].rpartition(".")
        if row["name"] in ("torch.cuda.is_available", "torch.backends.cudnn"):
            namespace, short = "torch", row["name"][len("torch."):]
        entry = summary.setdefault(namespace, [0, 0, []])
        entry[1] += 1
        if row["present"]:
            entry[0] += 1
        else:
            entry[2].append(short)
    return [(ns, present, total, missing) for ns, (present, total, missing) in summary.items()]


def _percent(present, total):
    return "%d/%d (%.0f%%)" % (present, total, 100.0 * present / total)


def markdown(rows, full=False):
    lines = []
    for group, title in (("nn", "nn, functional, init, optim, lr_scheduler"),
                         ("tensor", "Tensor methods and torch functions")):
        chosen = [r for r in rows if r["group"] == group]
        present = sum(r["present"] for r in chosen)
        lines.append("- %s: %s" % (title, _percent(present, len(chosen))))
    checked = [r for r in rows if r["smoke"]]
    agree = sum(r["smoke"] == "ok" for r in checked)
    if checked:
        lines.append("- compared with torch on small inputs: %d of %d agree"
                     % (agree, len(checked)))
    lines += ["", "| Namespace | In fastdl | Missing |", "|---|---|---|"]
    for namespace, present, total, missing in summarize(rows):
        lines.append("| `%s` | %s | %s |" % (namespace, _percent(present, total),
                                             ", ".join(missing) or "—"))
    disagreeing = [r for r in checked if r["smoke"] != "ok"]
    if disagreeing:
        lines += ["", "Disagreeing with torch: " + ", ".join(
            "`%s` (%s)" % (r["name"], r["smoke"]) for r in disagreeing)]
    if full:
        lines += ["", "| Name | In fastdl | Compared with torch |", "|---|---|---|"]
        lines += ["| `%s` | %s | %s |" % (r["name"], "yes" if r["present"] else "**no**",
                                          r["smoke"] or "—") for r in rows]
    return "\n".join(lines) + "\n"


START = "<!-- torch-coverage:start -->"
END = "<!-- torch-coverage:end -->"


def update_readme(path, text):
    with open(path) as f:
        readme = f.read()
    if START not in readme or END not in readme:
        raise SystemExit("%s has no %s ... %s section" % (path, START, END))
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    with open(path, "w") as f:
        f.write(head + START + "\n" + text + END + tail)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="one row per name")
    parser.add_argument("--no-torch", action="store_true", help="skip the comparisons")
    parser.add_argument("--update-readme", action="store_true",
                        help="write the summary into README.md between its markers")
    args = parser.parse_args(argv)
    import fastdl
    torch = None
    if not args.no_torch:
        try:
            import torch
        except ImportError:
            pass
    text = markdown(measure(fastdl, torch), full=args.full)
    if args.update_readme:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        update_readme(os.path.join(root, "README.md"), text)
    sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
