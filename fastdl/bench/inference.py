"""Compiled-inference cases: a fastdl plan, torch eager and ONNX Runtime, same network.

The ONNX file comes from torch's exporter, run in a child process
(``python -m fastdl.bench.inference NAME BATCH PATH``), so the process that
times ONNX Runtime holds its thread pool alone (BENCHMARKS.md). Torch is timed
in inference mode, the fastest eager setting it has.
"""
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

import numpy as np

from fastdl.bench.baselines import import_torch, rng, torch_lenet5, torch_resnet

# name: (input shape without the batch, label)
MODELS = {"lenet5": ((1, 28, 28), "LeNet-5"), "resnet20": ((3, 32, 32), "ResNet-20")}
CASES = [("lenet5", 1), ("lenet5", 64), ("resnet20", 1)]


def _torch_model(name):
    torch = import_torch()
    model = torch_lenet5(torch) if name == "lenet5" else torch_resnet(torch, 3)
    return model.eval()


def export_onnx(name, batch, path):
    """Write torch's ``name`` network for inputs of ``batch`` images to ``path`` (ONNX)."""
    torch = import_torch()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(_torch_model(name), torch.zeros((batch,) + MODELS[name][0]), path,
                          dynamo=False, input_names=["x"], output_names=["y"])


def _case(name, batch):
    shape = (batch,) + MODELS[name][0]

    def make_fastdl(smoke=False):
        import fastdl
        from fastdl import deploy, models
        fastdl.manual_seed(0)
        model = getattr(models, name)()
        model.eval()
        x = rng().standard_normal(shape, dtype=np.float32)
        plan = deploy.compile(model, x)
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
        directory = tempfile.mkdtemp()
        try:
            path = os.path.join(directory, "model.onnx")
            exported = subprocess.run([sys.executable, "-m", "fastdl.bench.inference", name,
                                       str(batch), path], capture_output=True, text=True)
            if exported.returncode != 0:   # no torch to export with: no peer to time
                raise ImportError("exporting the ONNX model failed: %s"
                                  % exported.stderr[-500:])
            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            session = onnxruntime.InferenceSession(path, options,
                                                   providers=["CPUExecutionProvider"])
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        x = rng().standard_normal(shape, dtype=np.float32)
        return lambda: session.run(None, {"x": x})
    label = "%s inference b%d" % (MODELS[name][1], batch)
    return label, None, "", make_fastdl, make_torch, make_onnxruntime


def inference_cases():
    """The ``infer`` suite: BENCHMARKS.md's compiled-inference rows."""
    return [_case(name, batch) for name, batch in CASES]


if __name__ == "__main__":
    export_onnx(sys.argv[1], int(sys.argv[2]), sys.argv[3])
