"""Benchmark cases: the same work written for fastdl and for torch.

A case is ``(name, work, unit, make_fastdl, make_torch)``, and inference cases
add ``make_onnxruntime`` (``inference.py``); ``make_*`` builds the data and
returns a zero-argument ``step`` (forward+backward, one optimizer step, or one
inference). ``work`` is FLOPs (unit ``GFLOP/s``) or bytes moved
(``GB/s``), used to report the achieved rate. Shapes are BENCHMARKS.md's.
"""
import numpy as np

from fastdl.bench.baselines import import_torch, rng, torch_lenet5, torch_resnet

# ------------------------------------------------------------------ convolution
CONV_SHAPES = [  # N, C_in, H, C_out, k, stride, padding
    (32, 3, 32, 32, 3, 1, 1), (32, 64, 16, 64, 3, 1, 1), (1, 64, 56, 64, 3, 1, 1),
    (32, 128, 14, 64, 1, 1, 0), (64, 1, 28, 6, 5, 1, 0), (32, 64, 16, 128, 3, 2, 1)]


def _conv_case(shape):
    n, c, h, c_out, k, s, p = shape
    out = (h + 2 * p - k) // s + 1
    flops = 3 * 2 * n * c_out * out * out * c * k * k   # forward, grad input, grad weight

    def make_fastdl():
        from fastdl.kernels import conv
        x = rng().standard_normal((n, c, h, h), dtype=np.float32)
        w = rng().standard_normal((c_out, c, k, k), dtype=np.float32)
        g = np.ones((n, c_out, out, out), np.float32)

        def step():
            conv.conv2d_forward(x, w, None, s, p)
            conv.conv2d_grad_input(g, w, x.shape, s, p)
            conv.conv2d_grad_weight(x, g, w.shape, s, p)
        return step

    def make_torch():
        torch = import_torch()
        x = torch.randn(n, c, h, h, requires_grad=True)
        w = torch.randn(c_out, c, k, k, requires_grad=True)

        def step():
            torch.nn.functional.conv2d(x, w, None, s, p).sum().backward()
        return step
    name = "conv N%d C%d->%d %d^2 k%d s%d p%d fwd+bwd" % (n, c, c_out, h, k, s, p)
    return name, flops, "GFLOP/s", make_fastdl, make_torch


# ------------------------------------------------------------- pooling and norms
def _pool_case():
    shape = (32, 64, 32, 32)
    moved = 4 * (np.prod(shape) * 2 + np.prod(shape) // 2)

    def make_fastdl():
        from fastdl.kernels import pool
        x = rng().standard_normal(shape, dtype=np.float32)
        g = np.ones((32, 64, 16, 16), np.float32)

        def step():
            _, indices = pool.max_pool2d_forward(x, 2)
            pool.max_pool2d_backward(g, indices, shape)
        return step

    def make_torch():
        torch = import_torch()
        x = torch.randn(*shape, requires_grad=True)
        return lambda: torch.nn.functional.max_pool2d(x, 2).sum().backward()
    return "max_pool2d 2x2 N32 C64 32^2 fwd+bwd", moved, "GB/s", make_fastdl, make_torch


def _norm_case(kind):
    shape = (4096, 768) if kind == "layer" else (32, 64, 32, 32)
    moved = 4 * int(np.prod(shape)) * 5   # read x, write y; read g and x, write dx

    def make_fastdl():
        from fastdl.kernels import norm
        x = rng().standard_normal(shape, dtype=np.float32)
        g = np.ones(shape, np.float32)
        channels = shape[1] if kind != "layer" else 768
        w, b = np.ones(channels, np.float32), np.zeros(channels, np.float32)
        mean, var = np.zeros(channels, np.float32), np.ones(channels, np.float32)

        def step():
            if kind == "batch":
                _, batch_mean, inv_std = norm.batch_norm_forward(x, w, b, mean, var, True)
                norm.batch_norm_backward(g, x, batch_mean, inv_std, w, True)
            elif kind == "group":
                _, group_mean, inv_std = norm.group_norm_forward(x, 8, w, b)
                norm.group_norm_backward(g, x, group_mean, inv_std, w, 8)
            elif kind == "instance":
                _, item_mean, inv_std = norm.instance_norm_forward(x, weight=w, bias=b)
                norm.instance_norm_backward(g, x, item_mean, inv_std, w)
            else:
                _, row_mean, inv_std = norm.layer_norm_forward(x, 768, w, b)
                norm.layer_norm_backward(g, x, row_mean, inv_std, w, 768)
        return step

    def make_torch():
        torch = import_torch()
        functional = torch.nn.functional
        x = torch.randn(*shape, requires_grad=True)
        channels = shape[1]
        w = torch.ones(channels, requires_grad=True)
        b = torch.zeros(channels, requires_grad=True)
        mean, var = torch.zeros(channels), torch.ones(channels)
        if kind == "batch":
            return lambda: functional.batch_norm(x, mean, var, w, b, True).sum().backward()
        if kind == "group":
            return lambda: functional.group_norm(x, 8, w, b).sum().backward()
        if kind == "instance":
            return lambda: functional.instance_norm(x, weight=w, bias=b).sum().backward()
        return lambda: functional.layer_norm(x, (768,), w, b).sum().backward()
    label = {"batch": "batch_norm2d train N32 C64 32^2", "group": "group_norm G8 N32 C64 32^2",
             "instance": "instance_norm2d N32 C64 32^2", "layer": "layer_norm 4096x768"}[kind]
    return label + " fwd+bwd", moved, "GB/s", make_fastdl, make_torch


# -------------------------------------------------------------------- optimizers
def _optimizer_case(kind):
    sizes = [200_000] * 50                   # 10M parameters in 50 tensors
    streams = {"sgd": 5, "adam": 7, "adamw": 7, "rmsprop": 5, "adagrad": 5}[kind]
    moved = 4 * sum(sizes) * streams

    def make_fastdl():
        from fastdl import nn, optim
        params = [nn.Parameter(rng().standard_normal(n, dtype=np.float32)) for n in sizes]
        options = {"sgd": dict(lr=0.01, momentum=0.9)}.get(kind, dict(lr=0.01))
        optimizer = {"sgd": optim.SGD, "adam": optim.Adam, "adamw": optim.AdamW,
                     "rmsprop": optim.RMSprop, "adagrad": optim.Adagrad}[kind](params,
                                                                               **options)
        for p in params:
            p._accumulate_grad(np.ones(p.shape, np.float32))
        return optimizer.step

    def make_torch():
        torch = import_torch()
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
    def make_fastdl():
        import fastdl
        from fastdl import functional as F, models, optim
        fastdl.manual_seed(0)
        model = models.lenet5() if model_name == "lenet5" else models.resnet8()
        optimizer = (optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
                     if model_name == "lenet5" else optim.Adam(model.parameters()))
        x = rng().standard_normal((batch, channels, size, size), dtype=np.float32)
        y = rng().integers(0, 10, batch)

        def step():
            optimizer.zero_grad()
            F.cross_entropy(model(fastdl.Tensor(x)), y).backward()
            optimizer.step()
        return step

    def make_torch():
        torch = import_torch()
        nn = torch.nn
        if model_name == "lenet5":
            model = torch_lenet5(torch)
            optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
        else:
            model = torch_resnet(torch)
            optimizer = torch.optim.Adam(model.parameters())
        x = torch.randn(batch, channels, size, size)
        y = torch.randint(0, 10, (batch,))

        def step():
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            optimizer.step()
        return step
    name = "%s train step b%d %d^2" % ("LeNet-5" if model_name == "lenet5" else "ResNet-8",
                                        batch, size)
    return name, None, "", make_fastdl, make_torch


def _autograd_case():
    def make_fastdl():
        import fastdl
        x = fastdl.Tensor(np.ones(1, np.float32), requires_grad=True)

        def step():
            y = x
            for _ in range(20):
                y = y * 1.0001
            y.sum().backward()
        return step

    def make_torch():
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
    "conv": lambda: [_conv_case(shape) for shape in CONV_SHAPES],
    "pool": lambda: [_pool_case()],
    "norm": lambda: [_norm_case(kind) for kind in ("batch", "group", "instance", "layer")],
    "optim": lambda: [_optimizer_case(kind) for kind in ("sgd", "adam", "adamw", "rmsprop",
                                                          "adagrad")],
    "train": lambda: [_train_case("lenet5", 64, 28, 1), _train_case("resnet8", 32, 32, 3)],
    "autograd": lambda: [_autograd_case()],
    "infer": lambda: _inference_cases(),
}


def _inference_cases():
    from fastdl.bench.inference import inference_cases
    return inference_cases()
