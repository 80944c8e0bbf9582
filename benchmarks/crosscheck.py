"""Time a few ``fastdl bench`` rows again, independently, and print both figures.

``fastdl bench`` has its own harness (warm-up by time, alternating rounds, one worker
process per library and round). This script shares none of it: each case is a short
torch program written here, run as written and with its imports swapped to fastdl,
each in a fresh ``python`` process timed with ``timeit``; the two libraries alternate
process by process. If the two timings disagree beyond the noise of the machine, the
harness is wrong. Usage::

    fastdl bench --suite conv,norm,models --rounds 5 --json bench.json
    python benchmarks/crosscheck.py bench.json --rounds 5 --threads 2
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import textwrap

_HERE = os.path.dirname(os.path.abspath(__file__))
_MODELS = os.path.join(_HERE, os.pardir, "fastdl", "bench", "cifar_models.py")

# Each case: the bench row it checks, set-up code and the statement timed. The set-up
# may use ``torch``, ``F`` and ``nn`` (torch's or fastdl's) and the models' text.
_OP_SETUP = """
rng = np.random.default_rng(0)
def leaf(*shape):
    return torch.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)
"""


def _op(shapes, grad_shape, expression):
    """A case timing ``expression(x, w, b).backward(g)`` on leaves of ``shapes``."""
    return """
x, w, b = %s
g = torch.tensor(rng.standard_normal(%r).astype(np.float32))
def call():
    x.grad = w.grad = b.grad = None
    %s.backward(g)
""" % (", ".join("leaf%r" % (shape,) for shape in shapes), grad_shape, expression)


CASES = [
    ("conv N32 C64->64 16^2 k3 s1 p1 fwd+bwd",
     _op([(32, 64, 16, 16), (64, 64, 3, 3), (64,)], (32, 64, 16, 16),
         "F.conv2d(x, w, b, 1, 1)")),
    ("conv N32 C64->128 16^2 k3 s2 p1 fwd+bwd",
     _op([(32, 64, 16, 16), (128, 64, 3, 3), (128,)], (32, 128, 8, 8),
         "F.conv2d(x, w, b, 2, 1)")),
    ("group_norm G8 N32 C64 32^2 fwd+bwd",
     _op([(32, 64, 32, 32), (64,), (64,)], (32, 64, 32, 32), "F.group_norm(x, 8, w, b)")),
    ("layer_norm 4096x768 fwd+bwd",
     _op([(4096, 768), (768,), (768,)], (4096, 768), "F.layer_norm(x, (768,), w, b)")),
    ("ResNet-18 no_grad forward b32 32^2", """
model = ResNet18().eval()
x = torch.tensor(rng.standard_normal((32, 3, 32, 32)).astype(np.float32))
def call():
    with torch.no_grad():
        model(x)
"""),
    ("MobileNetV2 train step (SGD-momentum) b32 32^2", """
model = MobileNetV2().train()
x = torch.tensor(rng.standard_normal((32, 3, 32, 32)).astype(np.float32))
y = torch.tensor(rng.integers(0, 10, 32))
opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
def call():
    opt.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    opt.step()
"""),
]

# Both programs keep freed large blocks in glibc's heap, as fastdl bench's processes
# do: with glibc's adaptive mmap threshold, whether a step's outputs are mapped afresh
# on every call depends on what the set-up code happened to free.
_MALLOC = ("import ctypes\nctypes.CDLL('libc.so.6').mallopt(-3, 256 << 20)\n"
           "ctypes.CDLL('libc.so.6').mallopt(-1, 1 << 30)")

_TORCH_IMPORTS = "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n"
_FASTDL_IMPORTS = ("import fastdl as torch\nimport fastdl.nn as nn\n"
                   "import fastdl.nn.functional as F\n")


def _program(library, case_code, threads, calls):
    models = open(_MODELS).read()
    if library == "fastdl":
        assert _TORCH_IMPORTS in models, "the models' import lines changed"
        models = models.replace(_TORCH_IMPORTS, _FASTDL_IMPORTS, 1)
    imports = _TORCH_IMPORTS if library == "torch" else _FASTDL_IMPORTS
    return "\n".join([
        "import json, timeit\nimport numpy as np", _MALLOC, imports, models,
        "torch.set_num_threads(%d)" % threads, _OP_SETUP, textwrap.dedent(case_code),
        # warm-up, untimed: first calls build caches and primitives on both sides
        "import time\nstart = time.perf_counter()\nwarm = 0\n"
        "while warm < 3 or time.perf_counter() - start < 2:\n    call()\n    warm += 1",
        "times = timeit.repeat(call, number=1, repeat=%d)" % calls,
        "print(json.dumps(times))"])


def _time_once(library, case_code, threads, calls):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    run = subprocess.run([sys.executable, "-c", _program(library, case_code, threads, calls)],
                         capture_output=True, text=True, env=env)
    if run.returncode:
        raise SystemExit("%s failed (exit %d):\n%s" % (library, run.returncode,
                                                      run.stderr[-2000:]))
    return statistics.median(json.loads(run.stdout.strip().splitlines()[-1])) * 1e3


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("bench_json", help="the --json file of a fastdl bench run")
    parser.add_argument("--rounds", type=int, default=5, help="processes per library")
    parser.add_argument("--calls", type=int, default=10, help="timed calls per process")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="", help="only the cases whose name contains this")
    args = parser.parse_args(argv)
    rows = {row["case"]: row for row in json.load(open(args.bench_json))["rows"]}
    print("%-48s %21s %21s %15s" % ("case", "fastdl ms bench/here", "torch ms bench/here",
                                     "ratio bench/here"))
    for case, code in CASES:
        if args.only not in case:
            continue
        here = {"fastdl": [], "torch": []}
        for _ in range(args.rounds):
            for library in ("fastdl", "torch"):
                here[library].append(_time_once(library, code, args.threads, args.calls))
        fastdl_ms = statistics.median(here["fastdl"])
        torch_ms = statistics.median(here["torch"])
        row = rows.get(case)
        bench = ("%9.2f" % row["fastdl_ms"], "%9.2f" % row["torch_ms"],
                 "%6.2f" % row["ratio"]) if row else ("%9s" % "-",) * 2 + ("%6s" % "-",)
        print("%-48s %s /%9.2f  %s /%9.2f  %s /%6.2f" % (
            case, bench[0], fastdl_ms, bench[1], torch_ms, bench[2], fastdl_ms / torch_ms))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
