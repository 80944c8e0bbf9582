"""Compiled-inference cases: one ONNX file, run by a fastdl plan and by ONNX Runtime,
and the same network in torch eager.

The ONNX file is torch's export of the network with seeded weights, written by a
child process (``python -m fastdl.bench.inference NAME BATCH PATH``), so that each
timed process (fastdl's, ONNX Runtime's) holds its thread pool alone (BENCHMARKS.md)
and both read byte-identical files: fastdl's plan is ``deploy.from_onnx`` of it.
Torch is timed in inference mode, the fastest eager setting it has.
"""
import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

import numpy as np

from fastdl.bench.baselines import import_torch, rng, torch_lenet5, torch_resnet

# name: (input shape without the batch, label)
MODELS = {"lenet5": ((1, 28, 28), "LeNet-5"), "resnet20": ((3, 32, 32), "ResNet-20"),
          "resnet18": ((3, 32, 32), "ResNet-18 (CIFAR)"),
          "mobilenetv2": ((3, 32, 32), "MobileNetV2 (CIFAR)")}
CASES = [("lenet5", 1), ("lenet5", 64), ("resnet20", 1), ("resnet18", 1), ("resnet18", 32),
         ("mobilenetv2", 1), ("mobilenetv2", 32)]


def _torch_model(name):
    """Torch's ``name`` network, weights seeded, in eval mode."""
    torch = import_torch()
    torch.manual_seed(0)
    if name in ("resnet18", "mobilenetv2"):
        from fastdl.bench.programs import MODEL_PROGRAM, load_program
        program = load_program(MODEL_PROGRAM, "torch")
        model = program.MODELS["ResNet-18" if name == "resnet18" else "MobileNetV2"]()
    else:
        model = torch_lenet5(torch) if name == "lenet5" else torch_resnet(torch, 3)
    return model.eval()


def export_onnx(name, batch, path):
    """Write torch's ``name`` network for inputs of ``batch`` images to ``path`` (ONNX)."""
    torch = import_torch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_torch_model(name), torch.zeros((batch,) + MODELS[name][0]), path,
                          dynamo=False, input_names=["x"], output_names=["y"])


@contextlib.contextmanager
def _exported(name, batch):
    """The path of the network's ONNX file, written by a child process, removed after."""
    directory = tempfile.mkdtemp()
    try:
        path = os.path.join(directory, "model.onnx")
        exported = subprocess.run([sys.executable, "-m", "fastdl.bench.inference", name,
                                   str(batch), path], capture_output=True, text=True)
        if exported.returncode != 0:   # no torch to export with: no file to time
            raise ImportError("exporting the ONNX model failed: %s" % exported.stderr[-500:])
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def _case(name, batch):
    shape = (batch,) + MODELS[name][0]

    def make_fastdl(smoke=False):
        from fastdl import deploy
        with _exported(name, batch) as path:
            # a benchmark's own file: trusted, so not held to the size limit for
            # files from elsewhere (ResNet-18's plan at batch 32 is above it)
            plan = deploy.from_onnx(path, max_bytes=None)
        x = rng().standard_normal(shape, dtype=np.float32)
        plan.warmup()
        return lambda: plan(x)

    def make_torch(smoke=False):
        torch = import_torch()
        model = _torch_model(name)
        x = torch.randn(shape)

        def step():
            with torch.inference_mode():
                model(x)
        return step

    def make_onnxruntime(threads, smoke=False):
        import onnxruntime
        with _exported(name, batch) as path:
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            session = onnxruntime.InferenceSession(path, options,
                                                   providers=["CPUExecutionProvider"])
        x = rng().standard_normal(shape, dtype=np.float32)
        return lambda: session.run(None, {"x": x})
    label = "%s inference b%d (same ONNX file)" % (MODELS[name][1], batch)
    return label, None, "", make_fastdl, make_torch, make_onnxruntime


def inference_cases():
    """The ``infer`` suite: BENCHMARKS.md's compiled-inference rows, and ResNet-18 and
    MobileNetV2 (CIFAR form) at batch 1 and 32."""
    return [_case(name, batch) for name, batch in CASES]


if __name__ == "__main__":
    export_onnx(sys.argv[1], int(sys.argv[2]), sys.argv[3])
