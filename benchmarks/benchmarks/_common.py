"""What the per-family asv files share: aligned threads and the timed step class."""


def aligned_step(fastdl_step, torch_step, arguments, library):
    """Build the step for ``library`` with torch on fastdl's thread count."""
    import fastdl
    if library == "fastdl":
        return fastdl_step(*arguments)
    step = torch_step(*arguments)
    import torch
    torch.set_num_threads(fastdl.get_num_threads())
    return step


def step_benchmark(name, doc, cases, make_step):
    """An asv class timing ``make_step(case, library)()`` (and its peak memory)."""
    def setup(self, case, library):
        self.step = make_step(case, library)
        self.step()   # JIT compilation and first-touch memory are never timed

    def run(self, case, library):
        self.step()
    return type(name, (), {"__doc__": doc, "params": [list(cases), ["fastdl", "torch"]],
                           "param_names": ["case", "library"], "timeout": 120,
                           "setup": setup, "time_forward_backward": run,
                           "peakmem_forward_backward": run})
