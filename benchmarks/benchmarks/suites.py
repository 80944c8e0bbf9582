"""asv view of ``fastdl bench``'s cases: conv, optimizers, training steps, autograd,
compiled inference.

Each class times one suite; the ``library`` parameter puts fastdl, torch and (for
inference) ONNX Runtime in the same class (asv runs every benchmark in its own
process). JIT warm-up is done in ``setup``; a missing peer skips its part.
"""
from fastdl.bench.suites import SUITES


class _Suite:
    suite = None
    timeout = 300

    def setup(self, case, library):
        cases = {c[0]: c for c in SUITES[self.suite]()}
        try:
            if library == "onnxruntime":
                import fastdl
                self.step = cases[case][5](fastdl.get_num_threads())
            else:
                self.step = (cases[case][3] if library == "fastdl" else cases[case][4])()
        except ImportError:
            raise NotImplementedError("%s is not installed" % library) from None
        self.step()

    def time_step(self, case, library):
        self.step()


def _suite_class(name, libraries=("fastdl", "torch")):
    cls = type("Time" + name.capitalize(), (_Suite,), {"suite": name})
    cls.params = ([c[0] for c in SUITES[name]()], list(libraries))
    cls.param_names = ["case", "library"]
    return cls


TimeConv = _suite_class("conv")
TimeOptim = _suite_class("optim")
TimeTrain = _suite_class("train")
TimeAutograd = _suite_class("autograd")
TimeInfer = _suite_class("infer", ("fastdl", "torch", "onnxruntime"))
