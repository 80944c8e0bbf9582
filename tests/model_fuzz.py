"""Random models for the plan fuzzer: every plan must equal its model.

``random_case(seed)`` builds, from the seed alone, an ``nn.Sequential`` of the layers
``deploy.compile`` documents (convs with every kernel 1/2/3/5, stride, dilation,
padding (ints, 'same' with odd and even kernels, 'valid'), every padding_mode, groups
and bias; BatchNorm2d folded or standalone; ReLU, LeakyReLU, Sigmoid, Tanh and torch's
other activations (ReLU6, Hardtanh, Hardsigmoid, Hardswish, SiLU, Mish, GELU, ELU,
SELU, Softplus, PReLU); dropouts and Identity; identity and projection BasicBlocks;
max, average and adaptive pools (average with None sizes, max where the size divides
the input); transposed convs), on odd and non-square inputs, with a head of a global
pool + Linear or Flatten + MLP (or none), in float32 or float64; the weights and
BatchNorm running statistics are drawn so the fusions see real values.
``check_case(case)`` compiles it and compares the plan with the eager model (and,
for float32, with the model in float64) at a few batch sizes, each called twice (the
second call reuses the buffers and chains of the first). The input sizes lean
towards widths of 8 and 16 and small channel counts, where the direct convs'
chains, in-place reads of bordered buffers and Winograd take over.

Replay one case: ``python tests/model_fuzz.py --seed SEED``; a long run:
``python tests/model_fuzz.py --seconds 600`` (or ``FASTDL_FUZZ_SECONDS=600 python -m
pytest tests/test_deploy_fuzz.py -s``).
"""
import argparse
import copy
import os
import sys
import time

import numpy as np

import fastdl
from fastdl import deploy, nn
from fastdl.kernels import pool as pool_kernels
from fastdl.shapes import conv_output_size

# worst error relative to the output's scale: float32 plans agree with their models
# to ~1e-6 (sums of a few hundred products, a dozen layers); a wrong border or tap
# is off by 1e-3 and more
TOLERANCE = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}
ACTIVATIONS = (("relu", 0.45), ("leaky_relu", 0.2), ("sigmoid", 0.15), ("tanh", 0.2),
               ("other", 0.25))
LEAKY_SLOPES = (0.01, 0.1, 0.3, -0.2, 1.5)
# torch's other activations (each a plan activation of its own), with their settings
OTHER_ACTIVATIONS = (
    ("ReLU6", lambda rng, c: nn.ReLU6()),
    ("Hardtanh", lambda rng, c: nn.Hardtanh(*sorted(rng.choice([-2.0, -0.5, 0.0, 0.5, 1.5],
                                                                2, replace=False)))),
    ("Hardsigmoid", lambda rng, c: nn.Hardsigmoid()),
    ("Hardswish", lambda rng, c: nn.Hardswish()),
    ("SiLU", lambda rng, c: nn.SiLU()),
    ("Mish", lambda rng, c: nn.Mish()),
    ("GELU", lambda rng, c: nn.GELU(str(rng.choice(["none", "tanh"])))),
    ("ELU", lambda rng, c: nn.ELU(float(rng.choice([1.0, 0.3, 2.0])))),
    ("SELU", lambda rng, c: nn.SELU()),
    ("Softplus", lambda rng, c: nn.Softplus(float(rng.choice([1.0, 0.5, 3.0])),
                                            float(rng.choice([20.0, 1.0])))),
    ("PReLU", lambda rng, c: nn.PReLU(int(rng.choice([1, c])),
                                      float(rng.choice([0.25, -0.5, 1.2])))),
)
PADDING_MODES = ("reflect", "replicate", "circular")


class Mismatch(AssertionError):
    """A plan that differs from its model (or fails where its model runs)."""


class Case:
    """One random model: ``layers`` (their one-line descriptions), input ``shape`` (C, H,
    W), ``dtype``, thread count and the batch sizes it is called at."""

    def __init__(self, seed, model, layers, shape, dtype, threads, batches):
        self.seed, self.model, self.layers = seed, model, layers
        self.shape, self.dtype, self.threads, self.batches = shape, dtype, threads, batches

    def describe(self):
        return "seed %d: input %s %s, %d thread(s), batches %s\n  %s" % (
            self.seed, self.shape, self.dtype.name, self.threads, self.batches,
            "\n  ".join(self.layers))


def _pick(rng, weighted):
    names, weights = zip(*weighted)
    return names[rng.choice(len(names), p=np.array(weights) / sum(weights))]


class _Builder:
    """Appends random layers to ``modules`` (described in ``layers``), tracking the
    activation's shape ``state`` (C, H, W). ``chained``: convs the direct path takes
    (one group, no dilation, "same" padding, at most 32 channels) and more residual
    blocks, so that most run in chains on bordered buffers."""

    def __init__(self, rng, state, chained, extended=True):
        self.rng, self.state, self.chained = rng, state, chained
        self.extended = extended
        self.layers, self.modules = [], []

    def add(self, module, description):
        self.modules.append(module)
        self.layers.append(description)

    def channels(self):
        current = self.state[0]
        if self.rng.random() < 0.5:
            return int(self.rng.integers(1, 33))
        return int(self.rng.choice([current, current, min(32, 2 * current), 3, 8, 16, 32]))

    def activation(self, channels=None):
        """A random activation; ``channels``: its input's (dim 1; PReLU's count)."""
        kind = _pick(self.rng, ACTIVATIONS if self.extended else ACTIVATIONS[:-1])
        if kind == "other":
            _, make = OTHER_ACTIVATIONS[int(self.rng.integers(len(OTHER_ACTIVATIONS)))]
            module = make(self.rng, self.state[0] if channels is None else channels)
            self.add(module, repr(module))
            return
        if kind == "leaky_relu":
            slope = float(self.rng.choice(LEAKY_SLOPES))
            self.add(nn.LeakyReLU(slope), "LeakyReLU(%g)" % slope)
            return
        module = {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[kind]()
        self.add(module, type(module).__name__)

    def conv_geometry(self):
        """(c_out, kernel, stride, padding, dilation, groups) of a random conv."""
        rng, (c_in, _, _) = self.rng, self.state
        c_out = self.channels()
        k = int(rng.choice([1, 3, 3, 5]))
        kernel = (k, k) if rng.random() < 0.85 or self.chained else tuple(
            int(v) for v in rng.choice([1, 2, 3, 5], 2))
        stride = (1, 1) if rng.random() < 0.65 else (2, 2) if rng.random() < 0.8 else (
            int(rng.integers(1, 3)), int(rng.integers(1, 3)))
        dilation = (1, 1) if rng.random() < 0.8 or self.chained else (2, 2)
        padding = []
        for a in (0, 1):
            same = dilation[a] * (kernel[a] - 1) // 2
            draw = 0.0 if self.chained else rng.random()
            padding.append(same if draw < 0.6 else 0 if draw < 0.8 else int(
                rng.integers(0, same + 2)))
        common = [g for g in range(2, 33) if c_in % g == 0 and c_out % g == 0]
        groups = 1 if not common or rng.random() < 0.75 or self.chained else int(
            rng.choice(common))
        padding = tuple(padding)
        if not self.chained and self.extended and rng.random() < 0.15:   # 'same', 'valid'
            if stride == (1, 1) and rng.random() < 0.7:
                padding = "same"
                if rng.random() < 0.5:                   # an even kernel: one side more
                    kernel = tuple(int(v) for v in rng.choice([2, 3, 4], 2))
            else:
                padding = "valid"
        return c_out, kernel, stride, padding, dilation, groups

    def padding_mode(self, kernel, padding, dilation):
        """'zeros' mostly, else a mode whose padding fits the input (reflect: smaller
        than it, circular: at most it)."""
        if self.chained or not self.extended or padding == "valid" or self.rng.random() < 0.85:
            return "zeros"
        mode = str(self.rng.choice(PADDING_MODES))
        widest = [d * (k - 1) - d * (k - 1) // 2 if padding == "same" else p
                  for d, k, p in zip(dilation, kernel, (0, 0) if padding == "same"
                                     else padding)]
        bound = [n - (mode == "reflect") for n in self.state[1:]]
        return mode if all(p <= b for p, b in zip(widest, bound)) else "zeros"

    def conv(self):
        rng, (c, h, w) = self.rng, self.state
        c_out, kernel, stride, padding, dilation, groups = self.conv_geometry()
        mode = self.padding_mode(kernel, padding, dilation)
        try:
            out_h, out_w = (n if padding == "same" else conv_output_size(
                n, kernel[a], stride[a], 0 if padding == "valid" else padding[a],
                dilation[a]) for a, n in enumerate((h, w)))
        except ValueError:   # a kernel larger than the padded input
            return
        bias = bool(rng.random() < 0.5)
        self.add(nn.Conv2d(c, c_out, kernel, stride, padding, dilation, groups, bias,
                           padding_mode=mode),
                 "Conv2d(%d, %d, kernel=%s, stride=%s, padding=%r, dilation=%s, groups=%d, "
                 "bias=%s, padding_mode=%r)" % (c, c_out, kernel, stride, padding, dilation,
                                                groups, bias, mode))
        draw = rng.random()
        if draw < 0.08:   # keeps the BN or activation after it standalone
            self.add(nn.Identity(), "Identity")
        elif draw < 0.12:
            dropout = (nn.Dropout(0.5), nn.Dropout2d(0.3))[int(rng.integers(2))]
            self.add(dropout, repr(dropout))
        if rng.random() < 0.6:
            affine, eps = bool(rng.random() < 0.85), float(rng.choice([1e-5, 1e-3]))
            self.add(nn.BatchNorm2d(c_out, eps=eps, affine=affine),
                     "BatchNorm2d(%d, eps=%g, affine=%s)" % (c_out, eps, affine))
        if rng.random() < 0.7:
            self.activation(c_out)
        self.state = (c_out, out_h, out_w)
        if rng.random() < 0.15 and min(out_h, out_w) >= 2:
            self.add(nn.MaxPool2d(2), "MaxPool2d(2)")   # in the conv's epilogue, if it can
            self.state = (c_out, out_h // 2, out_w // 2)

    def transposed(self):
        rng, (c, h, w) = self.rng, self.state
        c_out, k, stride = self.channels(), int(rng.choice([2, 3, 4])), int(rng.integers(1, 3))
        padding = int(rng.integers(0, k // 2 + 1))
        output_padding = int(rng.integers(0, stride))
        out = [(n - 1) * stride - 2 * padding + k + output_padding for n in (h, w)]
        if min(out) < 1 or max(out) > 40:
            return
        self.add(nn.ConvTranspose2d(c, c_out, k, stride, padding, output_padding),
                 "ConvTranspose2d(%d, %d, kernel=%d, stride=%d, padding=%d, output_padding=%d)"
                 % (c, c_out, k, stride, padding, output_padding))
        if rng.random() < 0.5:
            self.add(nn.BatchNorm2d(c_out), "BatchNorm2d(%d)" % c_out)
        self.state = (c_out, out[0], out[1])

    def block(self):
        c, h, w = self.state
        stride = 1 if self.rng.random() < 0.6 else 2
        c_out = c if stride == 1 and self.rng.random() < 0.5 else self.channels()
        self.add(nn.BasicBlock(c, c_out, stride), "BasicBlock(%d, %d, stride=%d)" % (
            c, c_out, stride))
        self.state = (c_out, -(-h // stride), -(-w // stride))

    def pool(self):
        rng, (c, h, w) = self.rng, self.state
        kind = "max_pool2d" if rng.random() < 0.6 else "avg_pool2d"
        k = 2 if rng.random() < 0.6 else int(rng.choice([1, 3, 4]))
        stride = None if rng.random() < 0.6 else int(rng.integers(1, 3))
        padding, ceil_mode = int(rng.integers(0, k // 2 + 1)), bool(rng.random() < 0.3)
        try:
            *_, (out_h, out_w) = pool_kernels.validate_pool2d_args(
                kind, (1, c, h, w), k, stride, padding, ceil_mode)
        except ValueError:   # an empty output
            return
        arguments = "%d, stride=%s, padding=%d, ceil_mode=%s" % (k, stride, padding, ceil_mode)
        if kind == "max_pool2d":
            self.add(nn.MaxPool2d(k, stride, padding, ceil_mode=ceil_mode),
                     "MaxPool2d(%s)" % arguments)
        else:
            include = bool(rng.random() < 0.5)
            self.add(nn.AvgPool2d(k, stride, padding, ceil_mode=ceil_mode,
                                  count_include_pad=include),
                     "AvgPool2d(%s, count_include_pad=%s)" % (arguments, include))
        self.state = (c, out_h, out_w)

    def standalone(self):
        """A BatchNorm2d or an activation not after a conv, or an adaptive pool."""
        rng, (c, h, w) = self.rng, self.state
        draw = rng.random()
        if draw < 0.4:
            self.add(nn.BatchNorm2d(c), "BatchNorm2d(%d)" % c)
        elif draw < 0.85:
            self.activation()
        elif draw < 0.94:
            size = (int(rng.integers(1, h + 2)), int(rng.integers(1, w + 2)))
            given = tuple(None if rng.random() < 0.25 else n for n in size)
            size = tuple(n if g is None else g for g, n in zip(given, (h, w)))
            self.add(nn.AdaptiveAvgPool2d(given), "AdaptiveAvgPool2d(%s)" % (given,))
            self.state = (c, size[0], size[1])
        else:   # adaptive max pools where the size divides the input's
            size = tuple(int(rng.choice([d for d in range(1, n + 1) if n % d == 0]))
                         for n in (h, w))
            given = tuple(None if rng.random() < 0.25 else n for n in size)
            size = tuple(n if g is None else g for g, n in zip(given, (h, w)))
            self.add(nn.AdaptiveMaxPool2d(given), "AdaptiveMaxPool2d(%s)" % (given,))
            self.state = (c, size[0], size[1])

    def body(self):
        weights = ((self.conv, 0.45), (self.block, 0.3 + 0.3 * self.chained),
                   (self.pool, 0.1), (self.standalone, 0.1 - 0.05 * self.chained),
                   (self.transposed, 0.05 - 0.05 * self.chained))
        for _ in range(int(self.rng.integers(1, 9))):
            _pick(self.rng, weights)()
        if not any(isinstance(m, (nn.Conv2d, nn.BasicBlock)) for m in self.modules):
            self.block()

    def head(self):
        """None, or a global pool or Flatten, then 0-2 hidden dense layers and a Linear."""
        rng, (c, h, w) = self.rng, self.state
        draw = rng.random()
        if draw < 0.25:
            return
        flatten = nn.Flatten() if rng.random() < 0.8 else nn.Flatten(-3, -1)
        if draw < 0.65:
            self.modules.append(nn.AdaptiveAvgPool2d(1) if rng.random() < 0.85
                                else nn.AdaptiveMaxPool2d(1))
            self.add(flatten, "%r, %r" % (self.modules[-1], flatten))
            features = c
        else:
            self.add(flatten, repr(flatten))
            features = c * h * w
        if rng.random() < 0.1:
            self.add(nn.Dropout(0.2), "Dropout(0.2)")
        for _ in range(int(rng.integers(0, 3))):
            hidden = int(rng.integers(1, 65 if features < 2048 else 17))
            bias = bool(rng.random() < 0.8)
            self.add(nn.Linear(features, hidden, bias), "Linear(%d, %d, bias=%s)" % (
                features, hidden, bias))
            if rng.random() < 0.3:
                self.add(nn.BatchNorm1d(hidden), "BatchNorm1d(%d)" % hidden)
            if rng.random() < 0.7:
                self.activation(hidden)
            features = hidden
        classes = int(rng.integers(1, 11))
        self.add(nn.Linear(features, classes), "Linear(%d, %d)" % (features, classes))


def _randomise(model, rng):
    """Weights scaled to keep activations near 1, biases, and BatchNorm running
    statistics and affine terms away from their initial values (so that folding them
    into the convs and dense layers changes the weights)."""
    for module in model.modules():
        if isinstance(module, nn.PReLU):
            module.weight.array[...] = rng.uniform(-0.5, 1.5, module.weight.array.shape)
        elif isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            shape = module.weight.array.shape
            fan_in = np.prod(shape[1:])
            if isinstance(module, nn.ConvTranspose2d):
                fan_in = max(1.0, shape[0] // module.groups * np.prod(shape[2:])
                             / np.prod(module.stride))
            module.weight.array[...] = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
            if module.bias is not None:
                module.bias.array[...] = rng.normal(0, 0.2, module.bias.array.shape)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            size = module.num_features
            module.running_mean[...] = rng.normal(0, 0.5, size)
            module.running_var[...] = rng.uniform(0.5, 2.0, size)
            if module.weight is not None:
                sign = np.where(rng.random(size) < 0.1, -1.0, 1.0)
                module.weight.array[...] = sign * rng.uniform(0.6, 1.4, size)
                module.bias.array[...] = rng.normal(0, 0.2, size)
    return model


def random_case(seed, extended=True):
    """The model, input and settings of one fuzz case, from ``seed`` alone; without
    ``extended``, none of torch's other activations (ReLU6, GELU, PReLU, ...), padding
    strings or non-zero padding modes (the plan ops that ONNX's other side may lack)."""
    rng = np.random.default_rng(seed)
    chained = bool(rng.random() < 0.35)
    sizes = [int(rng.choice([8, 16, 16])) if rng.random() < 0.5 + 0.3 * chained
             else int(rng.integers(5, 21)) for _ in range(2)]
    if rng.random() < 0.3:
        sizes[1] = sizes[0]
    channels = (int(rng.integers(1, 33)) if rng.random() < 0.3
                else int(rng.choice([1, 2, 3, 4, 8, 16])))
    shape = (channels, sizes[0], sizes[1])
    builder = _Builder(rng, shape, chained, extended)
    builder.body()
    builder.head()
    model = _randomise(nn.Sequential(*builder.modules), rng).eval()
    dtype = np.dtype(np.float64 if rng.random() < 0.25 - 0.15 * chained else np.float32)
    if dtype == np.float64:
        model.double()
    threads = int(rng.integers(1, 3))
    if THREAD_COUNTS:   # a machine with more cores: the same models at more thread counts
        threads = THREAD_COUNTS[seed % len(THREAD_COUNTS)]
    small, large = int(rng.integers(1, 4)), int(rng.integers(4, 14))
    batches = [small, large] if rng.random() < 0.5 else [large, small]
    return Case(seed, model, builder.layers, shape, dtype, threads, batches)


#: Thread counts to spread the cases over instead of 1 and 2 (``FASTDL_FUZZ_THREADS``,
#: e.g. "1,4,8,16"), for a long run on a machine with more cores.
THREAD_COUNTS = [int(n) for n in os.environ.get("FASTDL_FUZZ_THREADS", "").split(",") if n]


def _eager(model, x):
    with fastdl.no_grad():
        return model(fastdl.Tensor(x)).numpy()


def _compare(case, got, want, what, batch, call):
    """Raise Mismatch where ``got`` is not ``want`` to the dtype's tolerance, relative to
    the output's scale: its largest magnitude, or 1 if smaller (the weights keep the
    activations near 1; a small output, a difference of such terms, is as exact as
    they are)."""
    problem = None
    if got.shape != want.shape or got.dtype != case.dtype:
        problem = "the plan gives %s %s, %s %s" % (got.shape, got.dtype, what, want.shape)
    else:
        scale = max(float(np.max(np.abs(want), initial=0.0)), 1.0)
        error = float(np.max(np.abs(got.astype(np.float64) - want), initial=0.0)) / scale
        if not error <= TOLERANCE[case.dtype]:   # NaN fails too
            problem = "differs from %s by %.3g of the output scale %.3g (tolerance %g)" % (
                what, error, scale, TOLERANCE[case.dtype])
    if problem is not None:
        raise Mismatch("plan %s at batch %d, call %d\n%s\nreplay: python tests/model_fuzz.py "
                       "--seed %d" % (problem, batch, call + 1, case.describe(), case.seed))


def _check(case):
    rng = np.random.default_rng([case.seed, 1])
    try:
        plan = deploy.compile(case.model, np.zeros((1,) + case.shape, case.dtype))
    except ValueError as error:
        if str(error).startswith("deploy.compile"):
            return "refused"
        raise Mismatch("compiling raised %r\n%s" % (error, case.describe())) from error
    reference = copy.deepcopy(case.model).double() if case.dtype == np.float32 else None
    for batch in case.batches:
        for call in range(2):   # the second call reuses the first's buffers and chains
            x = rng.standard_normal((batch,) + case.shape).astype(case.dtype)
            try:
                got = plan(x)
            except Exception as error:
                raise Mismatch("the plan raised %r at batch %d\n%s" % (
                    error, batch, case.describe())) from error
            _compare(case, got, _eager(case.model, x), "the eager model", batch, call)
            if reference is not None:
                _compare(case, got, _eager(reference, x.astype(np.float64)),
                         "the model in float64", batch, call)
    return "ok"


def check_case(case):
    """Compile ``case`` at its thread count and compare the plan with the model: "ok", or
    "refused" where ``deploy.compile`` refuses it with a ValueError naming the module;
    raises Mismatch otherwise."""
    previous = fastdl.get_num_threads()
    fastdl.set_num_threads(case.threads)
    try:
        return _check(case)
    finally:
        fastdl.set_num_threads(previous)


def fuzz(first_seed, count=None, seconds=None, report=None):
    """Check cases ``first_seed``, ``first_seed + 1``, ... until ``count`` cases or
    ``seconds`` have passed; returns (statistics dict, list of Mismatch messages).
    ``report(statistics)`` is called every 200 cases."""
    statistics = {"models": 0, "ok": 0, "refused": 0, "mismatches": 0, "float32": 0,
                  "float64": 0, "first seed": first_seed}
    failures, start, seed = [], time.perf_counter(), first_seed
    while (count is None or statistics["models"] < count) and (
            seconds is None or time.perf_counter() - start < seconds):
        case = random_case(seed)
        try:
            statistics[check_case(case)] += 1
        except Mismatch as error:
            statistics["mismatches"] += 1
            failures.append(str(error))
        statistics["models"] += 1
        statistics[case.dtype.name] += 1
        key = "threads %d" % case.threads
        statistics[key] = statistics.get(key, 0) + 1
        seed += 1
        if report is not None and statistics["models"] % 200 == 0:
            report(statistics)
    statistics["seconds"] = round(time.perf_counter() - start, 1)
    return statistics, failures


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, help="replay one case, printing its model")
    parser.add_argument("--first", type=int, help="first seed of a run (default: random)")
    parser.add_argument("--count", type=int, help="cases to run")
    parser.add_argument("--seconds", type=float, default=60.0, help="time to run for")
    args = parser.parse_args(argv)
    if args.seed is not None:
        case = random_case(args.seed)
        print(case.describe())
        print(check_case(case))
        return 0
    first = args.first if args.first is not None else int(np.random.default_rng().integers(
        1 << 31))
    statistics, failures = fuzz(first, args.count, None if args.count else args.seconds,
                                lambda s: print(s, flush=True))
    for failure in failures:
        print(failure, end="\n\n")
    print(statistics)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
