"""tools/torch_coverage.py: its name lists, its counting and its README section."""
import importlib.util
import os
import re

import pytest

import fastdl

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def coverage():
    spec = importlib.util.spec_from_file_location(
        "torch_coverage", os.path.join(ROOT, "tools", "torch_coverage.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_lists_hold_191_and_85_distinct_names(coverage):
    rows = coverage.all_names()
    names = [name for _, name in rows]
    assert len(names) == len(set(names))
    assert sum(group == "nn" for group, _ in rows) == 191
    assert sum(group == "tensor" for group, _ in rows) == 85
    assert set(coverage.smoke_cases()) <= set(names)


def test_counting_per_namespace_and_in_total(coverage):
    rows = [{"group": "nn", "name": "torch.nn.A", "present": True, "smoke": "ok"},
            {"group": "nn", "name": "torch.nn.B", "present": False, "smoke": ""},
            {"group": "nn", "name": "torch.nn.functional.c", "present": True,
             "smoke": "differs (max error 1.0e+00)"},
            {"group": "tensor", "name": "torch.Tensor.d", "present": False, "smoke": ""},
            {"group": "tensor", "name": "torch.cuda.is_available", "present": True,
             "smoke": ""}]
    assert coverage.summarize(rows) == [
        ("torch.nn", 1, 2, ["B"]), ("torch.nn.functional", 1, 1, []),
        ("torch.Tensor", 0, 1, ["d"]), ("torch", 1, 1, [])]
    text = coverage.markdown(rows)
    assert "lr_scheduler: 2/3 (67%)" in text
    assert "torch functions: 1/2 (50%)" in text
    assert "1 of 2 agree" in text
    assert "| `torch.nn` | 1/2 (50%) | B |" in text
    assert "`torch.nn.functional.c` (differs" in text


def test_lookups_follow_torch_paths(coverage):
    assert coverage.resolve(fastdl, "torch.nn.Conv2d")
    assert coverage.resolve(fastdl, "torch.nn.functional.relu")
    assert coverage.resolve(fastdl, "torch.Tensor.shape")
    assert coverage.resolve(fastdl, "torch.optim.Optimizer.param_groups")
    assert not coverage.resolve(fastdl, "torch.nn.NoSuchLayer")
    assert not coverage.resolve(fastdl, "torch.Tensor.no_such_method")


def test_the_script_reports_what_it_measured(coverage, capsys):
    assert coverage.main(["--no-torch", "--full"]) == 0
    text = capsys.readouterr().out
    rows = coverage.measure(fastdl)
    present = sum(r["present"] for r in rows if r["group"] == "nn")
    assert "lr_scheduler: %d/191" % present in text
    assert len(re.findall(r"^\| `torch[.`]", text, re.M)) == 276 + len(coverage.summarize(rows))


def test_update_readme_replaces_only_its_section(coverage, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro\n%s\nold\n%s\nrest\n" % (coverage.START, coverage.END))
    coverage.update_readme(readme, "new table\n")
    assert readme.read_text() == "intro\n%s\nnew table\n%s\nrest\n" % (
        coverage.START, coverage.END)
