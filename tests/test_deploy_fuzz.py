"""Random models (``model_fuzz.py``): every plan equals its eager model.

By default a seeded quick run: ``QUICK_MODELS`` models from seed 0, the same ones
every time. A long run on demand, reporting the number of models tried:

    FASTDL_FUZZ_SECONDS=600 python -m pytest tests/test_deploy_fuzz.py

``FASTDL_FUZZ_SEED`` sets the first seed (default 0) and ``FASTDL_FUZZ_MODELS`` the
number of models of a run without a time limit. A failure prints each failing
model's seed and layers; ``python tests/model_fuzz.py --seed SEED`` replays one.
"""
import os

import numpy as np
import pytest

from fastdl import nn
from fastdl.deploy.plan import InferencePlan
from model_fuzz import Case, Mismatch, check_case, fuzz, random_case

# about 17 s on two cores; with the direct chains' zeroed-border fault back (a conv
# padding into a border that the grid of an in-place conv before it overwrote), 8 of
# these fail
QUICK_MODELS = 1000


def test_plans_equal_their_models(capsys):
    seconds = float(os.environ.get("FASTDL_FUZZ_SECONDS", 0)) or None
    count = None if seconds else int(os.environ.get("FASTDL_FUZZ_MODELS", QUICK_MODELS))
    statistics, failures = fuzz(int(os.environ.get("FASTDL_FUZZ_SEED", 0)), count, seconds)
    with capsys.disabled():
        print("\nplan fuzzer: %s" % statistics)
    assert statistics["refused"] == 0   # the fuzzer builds only what compile takes
    assert not failures, "%d of %d models:\n\n%s" % (
        len(failures), statistics["models"], "\n\n".join(failures[:5]))


def test_a_case_is_the_same_from_its_seed():
    first, second = random_case(12345), random_case(12345)
    assert first.describe() == second.describe()
    for (name, a), (_, b) in zip(first.model.state_dict().items(),
                                 second.model.state_dict().items()):
        np.testing.assert_array_equal(a, b, err_msg=name)


def test_a_wrong_plan_fails_with_its_seed_and_model(monkeypatch):
    run = InferencePlan.run
    monkeypatch.setattr(InferencePlan, "__call__", lambda self, x: run(self, x) + 1e-3)
    case = random_case(7)
    with pytest.raises(Mismatch, match="differs from the eager model") as raised:
        check_case(case)
    message = str(raised.value)
    assert "seed 7:" in message and case.layers[0] in message
    assert "python tests/model_fuzz.py --seed 7" in message


def test_a_refusal_is_counted_apart_from_mismatches():
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3, track_running_stats=False))
    case = Case(0, model.eval(), ["Conv2d(2, 3, 3)", "BatchNorm2d(3, no running stats)"],
                (2, 6, 6), np.dtype(np.float32), 1, [1])
    assert check_case(case) == "refused"
