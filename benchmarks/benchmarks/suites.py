"""asv view of ``fastdl bench``'s cases: conv and depthwise conv, pooling, norms,
optimizers, training steps, the CIFAR model rows, autograd, compiled inference.

Each class times one suite; the ``library`` parameter puts fastdl, the torch
baseline and (for inference) ONNX Runtime in the same class, and asv runs every
benchmark in its own process, so two libraries never share one (nor an OpenMP
runtime). Both sides make the same public calls (``fastdl.bench.suites``: e.g.
``y = F.conv2d(x, w, b); y.backward(g)`` with the gradients reset each call), on
fastdl's thread count. ``setup`` builds the step and calls it twice, so JIT
compilation and first-touch memory are never timed; a missing peer is skipped.
"""
from fastdl.bench.suites import SUITES


class _Suite:
    suite = None
    timeout = 300

    def setup(self, case, library):
        import fastdl
        fastdl.runtime.keep_freed_memory_for_reuse()   # as in fastdl.bench.worker
        threads = fastdl.get_num_threads()
        cases = {c[0]: c for c in SUITES[self.suite]()}
        try:
            if library == "onnxruntime":
                if len(cases[case]) < 6:
                    raise NotImplementedError("no ONNX Runtime peer for %s" % case)
                self.step = cases[case][5](threads)
            elif library == "fastdl":
                fastdl.set_num_threads(threads)
                self.step = cases[case][3]()
            else:
                import torch
                torch.set_num_threads(threads)
                self.step = cases[case][4]()
        except ImportError:
            raise NotImplementedError("%s is not installed" % library) from None
        for _ in range(2):   # warm-up, never timed
            self.step()

    def time_step(self, case, library):
        self.step()

    def peakmem_step(self, case, library):
        self.step()


def _suite_class(name, libraries=("fastdl", "torch")):
    cls = type("Time" + name.capitalize(), (_Suite,), {"suite": name})
    cls.params = ([c[0] for c in SUITES[name]()], list(libraries))
    cls.param_names = ["case", "library"]
    return cls


TimeConv = _suite_class("conv")
TimePool = _suite_class("pool")
TimeNorm = _suite_class("norm")
TimeOptim = _suite_class("optim")
TimeTrain = _suite_class("train")
TimeModels = _suite_class("models")
TimeAutograd = _suite_class("autograd")
TimeInfer = _suite_class("infer", ("fastdl", "torch", "onnxruntime"))
