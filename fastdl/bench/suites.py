"""Benchmark cases: the same work, through the same public calls, in fastdl and in torch.

A case is ``(name, work, unit, make_fastdl, make_torch)``, and inference cases
add ``make_onnxruntime`` (``inference.py``); ``make_*(smoke=False)`` builds the
data and returns a zero-argument ``step`` (forward+backward, one optimizer step,
a training step or one inference); ``smoke=True`` builds tiny shapes, for tests.
``work`` is FLOPs (unit ``GFLOP/s``) or bytes moved (``GB/s``), used to report
the achieved rate. Shapes are BENCHMARKS.md's.

Like for like: an op row is written once in torch's idiom and run on both sides
with the library swapped (``y = F.conv2d(x, w, b); y.backward(g)``, the same
``g``, every ``.grad`` set to None before each call, no other op); a model row is
``cifar_models.py``, one torch program run as written and with its imports
swapped to fastdl (``programs.py``). ``tests/test_bench.py`` checks that both
sides of each row compute the same outputs and gradients.
"""
import numpy as np

from fastdl.bench.baselines import import_torch, rng, torch_lenet5, torch_resnet

# ------------------------------------------------ ops through the public API
def _modules(library):
    """``(torch, F)``: torch itself, or fastdl under torch's names."""
    if library == "torch":
        torch = import_torch()
        import torch.nn.functional as F
    elif library == "fastdl":
        import fastdl as torch
        import fastdl.nn.functional as F
    else:
        raise ValueError("library must be 'torch' or 'fastdl', got %r" % (library,))
    return torch, F


def _op_maker(library, arrays, forward):
    """``make(smoke=False)`` for one library: the step ``y = forward(...); y.backward(g)``.

    ``arrays(smoke)`` gives ``[(ndarray, requires_grad), ...]``; ``forward(torch, F,
    *tensors)`` is the op in torch's idiom, run unchanged on both sides. Each step
    first sets the leaves' ``.grad`` to None, so nothing accumulates across calls,
    and backpropagates the same seeded ``g``. The step returns ``y``; its
    ``leaves`` attribute holds the tensors whose gradients it computes.
    """
    def make(smoke=False):
        torch, F = _modules(library)
        specs = arrays(smoke)
        tensors = [torch.from_numpy(a).requires_grad_(True) if grad else torch.from_numpy(a)
                   for a, grad in specs]
        leaves = [t for t, (_, grad) in zip(tensors, specs) if grad]
        with torch.no_grad():
            shape = tuple(forward(torch, F, *tensors).shape)
        g = torch.from_numpy(np.random.default_rng(1).standard_normal(shape,
                                                                      dtype=np.float32))

        def step():
            for leaf in leaves:
                leaf.grad = None
            y = forward(torch, F, *tensors)
            y.backward(g)
            return y
        step.leaves = leaves
        return step
    make.arrays, make.forward = arrays, forward   # the same on both sides (tests check)
    return make


def _op_case(name, work, unit, arrays, forward):
    return (name, work, unit, _op_maker("fastdl", arrays, forward),
            _op_maker("torch", arrays, forward))


def _normal(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)


# ------------------------------------------------------------------ convolution
CONV_SHAPES = [  # N, C_in, H, C_out, k, stride, padding
    (32, 3, 32, 32, 3, 1, 1), (32, 64, 16, 64, 3, 1, 1), (1, 64, 56, 64, 3, 1, 1),
    (32, 128, 14, 64, 1, 1, 0), (64, 1, 28, 6, 5, 1, 0), (32, 64, 16, 128, 3, 2, 1)]
DEPTHWISE_SHAPES = [  # N, C, H, stride (3x3, padding 1, groups = C)
    (32, 144, 28, 1), (32, 96, 56, 2), (1, 256, 14, 1)]


def _conv_case(n, c, h, c_out, k, s, p, groups=1):
    out = (h + 2 * p - k) // s + 1
    # forward, grad input, grad weight: 2 FLOPs per multiply-add each
    flops = 3 * 2 * n * c_out * out * out * (c // groups) * k * k

    def arrays(smoke):
        n_, c_, h_, c_out_, groups_ = n, c, h, c_out, groups
        if smoke:   # tiny shapes with the same kernel, stride, padding and grouping
            n_, h_ = min(n, 2), min(h, 12)
            c_, c_out_ = (c if c <= 8 else c // 8, c_out if c_out <= 8 else c_out // 8) \
                if groups == 1 else (4, 4)
            groups_ = 1 if groups == 1 else 4
        fan_in = c_ // groups_ * k * k
        return [(_normal(n_, c_, h_, h_), True),
                (_normal(c_out_, c_ // groups_, k, k, seed=1) / np.float32(np.sqrt(fan_in)),
                 True),
                (_normal(c_out_, seed=2), True)]

    def forward(torch, F, x, w, b):
        return F.conv2d(x, w, b, s, p, 1, w.shape[0] if groups > 1 else 1)
    if groups == 1:
        name = "conv N%d C%d->%d %d^2 k%d s%d p%d" % (n, c, c_out, h, k, s, p)
    else:
        name = "depthwise 3x3 N%d C%d %d^2 s%d" % (n, c, h, s)
    return _op_case(name + " fwd+bwd", flops, "GFLOP/s", arrays, forward)


def _conv_cases():
    return ([_conv_case(*shape) for shape in CONV_SHAPES]
            + [_conv_case(n, c, h, c, 3, s, 1, groups=c) for n, c, h, s in DEPTHWISE_SHAPES])


# ------------------------------------------------------------- pooling and norms
POOL_SHAPE = (32, 64, 32, 32)
POOLS = [  # label, function name, arguments
    ("max_pool2d 2x2", "max_pool2d", (2,)), ("max_pool2d 3x3 s2 p1", "max_pool2d", (3, 2, 1)),
    ("avg_pool2d 2x2", "avg_pool2d", (2,)), ("avg_pool2d 3x3 s2 p1", "avg_pool2d", (3, 2, 1))]


def _pool_case(label, function, args):
    n, c, h, _ = POOL_SHAPE
    k, s, p = (args + (args[0], 0))[:3]
    out = (h + 2 * p - k) // s + 1
    # read x, write y; read g (and the argmax for max), write dx
    moved = 4 * (2 * n * c * h * h + 2 * n * c * out * out)

    def arrays(smoke):
        return [(_normal(2, 3, 8, 8) if smoke else _normal(*POOL_SHAPE), True)]

    def forward(torch, F, x):
        return getattr(F, function)(x, *args)
    return _op_case("%s N%d C%d %d^2 fwd+bwd" % (label, n, c, h), moved, "GB/s", arrays,
                    forward)


def _norm_case(kind):
    shape = (4096, 768) if kind == "layer" else (32, 64, 32, 32)
    moved = 4 * int(np.prod(shape)) * 5   # read x, write y; read g and x, write dx

    def arrays(smoke):
        full = ((4, 24) if kind == "layer" else (2, 16, 5, 5)) if smoke else shape
        channels = full[-1] if kind == "layer" else full[1]
        weight = 1 + 0.1 * _normal(channels, seed=1)
        bias = 0.1 * _normal(channels, seed=2)
        return [(_normal(*full), True), (weight, True), (bias, True),
                (np.zeros(channels, np.float32), False), (np.ones(channels, np.float32), False)]

    def forward(torch, F, x, w, b, running_mean, running_var):
        if kind == "batch":
            return F.batch_norm(x, running_mean, running_var, w, b, True)
        if kind == "group":
            return F.group_norm(x, 8, w, b)
        if kind == "instance":
            return F.instance_norm(x, weight=w, bias=b)
        return F.layer_norm(x, (x.shape[-1],), w, b)
    label = {"batch": "batch_norm2d train N32 C64 32^2", "group": "group_norm G8 N32 C64 32^2",
             "instance": "instance_norm2d N32 C64 32^2", "layer": "layer_norm 4096x768"}[kind]
    return _op_case(label + " fwd+bwd", moved, "GB/s", arrays, forward)


# -------------------------------------------------------------------- optimizers
def _optimizer_case(kind):
    full_sizes = [200_000] * 50              # 10M parameters in 50 tensors
    streams = {"sgd": 5, "adam": 7, "adamw": 7, "rmsprop": 5, "adagrad": 5}[kind]
    moved = 4 * sum(full_sizes) * streams

    def make_fastdl(smoke=False):
        from fastdl import nn, optim
        sizes = [100] * 2 if smoke else full_sizes
        params = [nn.Parameter(rng().standard_normal(n, dtype=np.float32)) for n in sizes]
        options = {"sgd": dict(lr=0.01, momentum=0.9)}.get(kind, dict(lr=0.01))
        optimizer = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW,
                     "rmsprop": optim.RMSprop, "adagrad": optim.Adagrad}[kind](params,
                                                                               **options)
        for p in params:
            p._accumulate_grad(np.ones(p.shape, np.float32))
        return optimizer.step

    def make_torch(smoke=False):
        torch = import_torch()
        sizes = [100] * 2 if smoke else full_sizes
        params = [torch.randn(n, requires_grad=True) for n in sizes]
        for p in params:
            p.grad = torch.ones_like(p)
        options = {"sgd": dict(lr=0.01, momentum=0.9)}.get(kind, dict(lr=0.01))
        cls = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
               "rmsprop": torch.optim.RMSprop, "adagrad": torch.optim.Adagrad}[kind]
        try:   # torch's fastest variant: fused where it exists on CPU, else foreach
            optimizer = cls(params, fused=True, **options)
            optimizer.step()
        except (RuntimeError, TypeError, ValueError):
            optimizer = cls(params, foreach=True, **options)
        return optimizer.step
    label = {"sgd": "SGD-momentum"}.get(kind, kind.capitalize() if kind != "adamw"
                                        else "AdamW")
    return "%s step 10M params / 50 tensors" % label, moved, "GB/s", make_fastdl, make_torch


# --------------------------------------------------------------- training steps
def _train_case(model_name, batch, size, channels):
    def make_fastdl(smoke=False):
        import fastdl
        from fastdl import functional as F, models, optim
        fastdl.manual_seed(0)
        model = models.lenet5() if model_name == "lenet5" else models.resnet8()
        optimizer = (optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
                     if model_name == "lenet5" else optim.Adam(model.parameters()))
        n = 2 if smoke else batch
        x = rng().standard_normal((n, channels, size, size), dtype=np.float32)
        y = rng().integers(0, 10, n)

        def step():
            optimizer.zero_grad()
            F.cross_entropy(model(fastdl.Tensor(x)), y).backward()
            optimizer.step()
        return step

    def make_torch(smoke=False):
        torch = import_torch()
        nn = torch.nn
        if model_name == "lenet5":
            model = torch_lenet5(torch)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        else:
            model = torch_resnet(torch)
            optimizer = torch.optim.Adam(model.parameters())
        n = 2 if smoke else batch
        x = torch.randn(n, channels, size, size)
        y = torch.randint(0, 10, (n,))

        def step():
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        return step
    name = "%s train step b%d %d^2" % ("LeNet-5" if model_name == "lenet5" else "ResNet-8",
                                        batch, size)
    return name, None, "", make_fastdl, make_torch


# ------------------------------------------------------------------ model rows
MODEL_NAMES = ("ResNet-18", "MobileNetV2", "ShuffleNetV2 0.5x")
MODEL_MODES = (("train", 32), ("eval", 32), ("eval", 1))   # CIFAR form, 32x32 inputs


def _model_maker(library, model_name, mode, batch):
    """``make(smoke=False)``: the step of ``cifar_models.py``, loaded for ``library``."""
    def make(smoke=False):
        from fastdl.bench.programs import MODEL_PROGRAM, load_program
        if library == "torch":
            import_torch()   # ImportError here: no torch, no peer to time
        program = load_program(MODEL_PROGRAM, library)
        program.torch.manual_seed(0)
        model = program.MODELS[model_name]()
        size = min(batch, 2) if smoke else batch
        images = _normal(size, 3, 32, 32)
        if mode == "train":
            labels = np.random.default_rng(1).integers(0, 10, size)
            step = program.train_step(model, images, labels)
        else:
            step = program.eval_step(model, images)
        step.model = model
        return step
    return make


def _model_case(model_name, mode, batch):
    what = ("train step (SGD-momentum)" if mode == "train" else "no_grad forward")
    return ("%s %s b%d 32^2" % (model_name, what, batch), None, "",
            _model_maker("fastdl", model_name, mode, batch),
            _model_maker("torch", model_name, mode, batch))


def _autograd_case():
    def make_fastdl(smoke=False):
        import fastdl
        x = fastdl.Tensor(np.ones(1, np.float32), requires_grad=True)

        def step():
            y = x
            for _ in range(20):
                y = y * 1.0001
            y.sum().backward()
        return step

    def make_torch(smoke=False):
        torch = import_torch()
        x = torch.ones(1, requires_grad=True)

        def step():
            y = x
            for _ in range(20):
                y = y * 1.0001
            y.sum().backward()
        return step
    return "autograd: 20-op chain on 1 element, fwd+bwd", None, "", make_fastdl, make_torch


SUITES = {
    "conv": _conv_cases,
    "pool": lambda: [_pool_case(*pool) for pool in POOLS],
    "norm": lambda: [_norm_case(kind) for kind in ("batch", "group", "instance", "layer")],
    "optim": lambda: [_optimizer_case(kind) for kind in ("sgd", "adam", "adamw", "rmsprop",
                                                          "adagrad")],
    "train": lambda: [_train_case("lenet5", 64, 28, 1), _train_case("resnet8", 32, 32, 3)],
    "models": lambda: [_model_case(name, mode, batch) for name in MODEL_NAMES
                       for mode, batch in MODEL_MODES],
    "autograd": lambda: [_autograd_case()],
    "infer": lambda: _inference_cases(),
}


def _inference_cases():
    from fastdl.bench.inference import inference_cases
    return inference_cases()
