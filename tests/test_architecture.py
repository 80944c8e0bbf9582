"""The import rules of ARCHITECTURE.md, checked on the source with ``ast`` (nothing is imported).

1. Floors. Every module of ``fastdl`` and ``fastdl_ext`` sits on one floor (``FLOORS``) and
   imports only from its own floor or below. Every import counts: module-level and
   function-local ones, ``importlib.import_module("...")`` literals, and attribute chains
   through an imported package (``fastdl.nn.Module`` after ``import fastdl`` loads
   ``fastdl.nn`` through the package's lazy ``__getattr__``).
2. Private names. A ``_module`` belongs to its package; an ``_attribute`` to its module, or,
   when that module is itself private, to the module's package. Nothing outside may
   import or reach them (``examples/`` and ``benchmarks/`` are checked too; the tests may).
3. The compiled extension ``fastdl_ext`` is imported by ``fastdl.kernels`` alone.
4. Cycles. No two modules import each other, directly or around a loop, at module level
   (imports inside functions run later and are left out), except the loops listed in
   ``ALLOWED_CYCLES``: Tensor with the modules that define its operations, by design.

The exceptions are listed with their reasons in ``ALLOWED_UPWARD``, ``ALLOWED_PRIVATE``
and ``ALLOWED_CYCLES``. An entry that no longer matches anything fails the test as well
(a pattern entry, which names a family of modules, excepted), so the lists only shrink;
a module that is on no floor fails until it is given one.

Seeing it fail: ``test_checks_catch_planted_violations`` copies the sources to a scratch
directory, plants a module on no floor, an upward import, a private import and a cycle,
and expects each to be reported. By hand: copy ``fastdl/`` and ``fastdl_ext/`` to a scratch directory, add
``from fastdl.nn import Module`` inside a function of its ``fastdl/shapes.py``, and run
this file with ``FASTDL_SOURCE_ROOT`` pointing at that directory:
``test_lower_floors_never_import_higher_ones`` fails naming ``fastdl.shapes -> fastdl.nn``.
"""
import ast
import fnmatch
import os
import pathlib
import re
import shutil

import pytest

ROOT = pathlib.Path(os.environ.get("FASTDL_SOURCE_ROOT",
                                   pathlib.Path(__file__).resolve().parent.parent))
PACKAGES = ("fastdl", "fastdl_ext")
OUTSIDE = ("examples", "benchmarks")   # checked for private names only

# Lowest first. A pattern names a module and everything under it ("=fastdl": that module
# alone, here the package's __init__); ``*`` as in fnmatch.
FLOORS = [
    ("base", ["=fastdl", "fastdl._checks", "fastdl._io", "fastdl.random", "fastdl.runtime",
              "fastdl.safetensors_io", "fastdl.shapes", "fastdl.dtypes", "fastdl.devices",
              "fastdl.cuda", "fastdl.accelerator", "fastdl.backends"]),
    ("kernels", ["fastdl.kernels", "fastdl_ext"]),
    ("autograd", ["fastdl.autograd", "fastdl.grad_mode", "fastdl.tensor_*",
                  "fastdl.creation"]),
    ("functional", ["fastdl.functional"]),
    # fastdl.ops: torchvision.ops' names (box losses, RoI Align), functions and layers
    ("layers", ["fastdl.nn", "fastdl.optim", "fastdl.data", "fastdl.ops"]),
    # fastdl.utils: torch's paths (torch.utils.data, ...data.distributed) as aliases
    # fastdl.detection_eval: COCO box AP/AR (NumPy; pycocotools when installed)
    ("models", ["fastdl.models", "fastdl.distributed", "fastdl.detection",
                "fastdl.detection_eval", "fastdl.testing",
                "fastdl.serialization", "fastdl.utils"]),
    ("workflows", ["fastdl.train", "fastdl.deploy"]),
    ("entry points", ["fastdl.cli", "fastdl.__main__", "fastdl.bench"]),
]

# (importer, imported module): reason. Imports that go up a floor on purpose: none today.
ALLOWED_UPWARD = {}

# Packages whose __init__ is a facade loading public names on first use (PEP 562): their
# imports inside functions may reach any floor; the ones at module level obey the floors.
LAZY_FACADES = {
    "fastdl": "fastdl.Tensor, fastdl.zeros, fastdl.nn, ... load on first use, so that "
              "`import fastdl` costs only the base floor",
}

# (importer, private name as module or module:attribute): reason and follow-up.
# Both sides may be fnmatch patterns.
ALLOWED_PRIVATE = {
    ("fastdl.tensor_*", "fastdl.autograd:_*"):
        "Tensor's method modules are autograd split over several files (Tensor API work in "
        "progress) and share its internals; follow-up: move what they share into a private "
        "module of the package that all of them import",
}

# Module sets allowed to form one import cycle, with the reason.
ALLOWED_CYCLES = [
    ({"fastdl.autograd", "fastdl.tensor_*"},
     "autograd defines Tensor and imports, last, the modules that define its operations "
     "(tensor_ops; the Tensor API split adds more tensor_* modules), which import Tensor"),
]


# ----------------------------------------------------------------------------- reading

class Import:
    """One import of a fastdl module: ``target`` module, ``name`` attribute or None."""

    def __init__(self, importer, target, name, line, module_level):
        self.importer, self.target, self.name = importer, target, name
        self.line, self.module_level = line, module_level

    def __repr__(self):
        where = "%s:%d" % (self.importer, self.line)
        return "%s -> %s%s" % (where, self.target, ":" + self.name if self.name else "")


def module_files(root, packages=PACKAGES):
    """``{module name: path}`` for every .py (and fastdl_ext .pyx/.pxd) file."""
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*")):
            if path.suffix not in (".py", ".pyx", ".pxd") or "__pycache__" in path.parts:
                continue
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            modules.setdefault(".".join(parts), path)
    return modules


def _lazy_attributes(root):
    """The package's ``_ATTRIBUTES`` table (name -> defining module), read from its source."""
    tree = ast.parse((root / "fastdl" / "__init__.py").read_text())
    table = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id == "_ATTRIBUTES" for t in node.targets):
            for key, value in zip(node.value.keys, node.value.values):
                if key is None and isinstance(value, ast.Call):   # **dict.fromkeys([...], m)
                    names, module = value.args
                    table.update(dict.fromkeys((n.value for n in names.elts), module.value))
                elif key is not None:
                    table[key.value] = value.value
    return table


class _Reader(ast.NodeVisitor):
    """Collects the fastdl imports of one module, with scopes for the names they bind."""

    def __init__(self, name, is_package, modules, lazy):
        self.name, self.modules, self.lazy = name, modules, lazy
        self.package = name if is_package else name.rpartition(".")[0]
        self.imports = []
        self.scopes = [{}]   # name -> module it is bound to (None: bound to something else)
        self.depth = 0       # function nesting

    def _add(self, target, name, node):
        self.imports.append(Import(self.name, target, name, node.lineno, self.depth == 0))

    def _resolve(self, dotted, name=None):
        """``(module, attribute or None)`` for ``dotted``'s longest known module prefix."""
        parts = dotted.split(".") + ([name] if name else [])
        for cut in range(len(parts), 0, -1):
            module = ".".join(parts[:cut])
            if module in self.modules:
                rest = parts[cut:]
                if module == "fastdl" and rest and rest[0] in self.lazy:
                    return self.lazy[rest[0]], rest[0]
                return module, (rest[0] if rest else None)
        return None, None

    def _bind(self, name, module):
        self.scopes[-1][name] = module

    def visit_Import(self, node):
        for alias in node.names:
            if alias.name.split(".")[0] not in PACKAGES:
                continue
            target, _ = self._resolve(alias.name)
            if target:
                self._add(target, None, node)
            top = alias.asname or alias.name.split(".")[0]
            self._bind(top, self._resolve(alias.name if alias.asname else top)[0])

    def visit_ImportFrom(self, node):
        base = node.module or ""
        if node.level:
            anchor = self.package.split(".")
            anchor = anchor[:len(anchor) - node.level + 1]
            base = ".".join(anchor + ([node.module] if node.module else []))
        if base.split(".")[0] not in PACKAGES:
            return
        for alias in node.names:
            if alias.name == "*":
                target, _ = self._resolve(base)
                if target:
                    self._add(target, None, node)
                continue
            target, name = self._resolve(base, alias.name)
            if target:
                self._add(target, name, node)
                self._bind(alias.asname or alias.name, None if name else target)

    def visit_Call(self, node):
        func = node.func
        called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if called in ("import_module", "__import__") and node.args and isinstance(
                node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            if node.args[0].value.split(".")[0] in PACKAGES:
                target, _ = self._resolve(node.args[0].value)
                if target:
                    self._add(target, None, node)
        self.generic_visit(node)

    def visit_Attribute(self, node):
        chain, inner = [], node
        while isinstance(inner, ast.Attribute):
            chain.append(inner.attr)
            inner = inner.value
        if isinstance(inner, ast.Name) and isinstance(node.ctx, ast.Load):
            module = self._lookup(inner.id)
            if module:
                target, name = self._resolve(".".join([module] + chain[::-1]))
                if target and (target != module or name):
                    self._add(target, name, node)
                return      # the chain is read whole
        self.generic_visit(node)

    def _lookup(self, name):
        for scope in reversed(self.scopes):
            if name in scope:
                return scope[name]
        return None

    def _function(self, node):
        self.scopes.append(_assigned_names(node))
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1
        self.scopes.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function


def _assigned_names(function):
    """Names a function binds other than by import (they shadow outer imports)."""
    names = {}
    for node in ast.walk(function):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names[node.id] = None
        elif isinstance(node, ast.arg):
            names[node.arg] = None
    return names


_PYX_IMPORT = re.compile(r"^[ \t]*(?:from[ \t]+([\w.]+)[ \t]+c?import[ \t]+(\([^)]*\)|[^\n]+)"
                         r"|c?import[ \t]+([\w.]+))", re.MULTILINE)


def read_imports(root, modules):
    """Every fastdl import of every module in ``modules``."""
    lazy = _lazy_attributes(root) if "fastdl" in modules else {}
    imports = []
    for name, path in modules.items():
        text = path.read_text()
        if path.suffix == ".py":
            reader = _Reader(name, path.name == "__init__.py", modules, lazy)
            reader.visit(ast.parse(text, str(path)))
            imports += reader.imports
            continue
        reader = _Reader(name, False, modules, lazy)   # Cython: the import lines only
        text = re.sub(r"#[^\n]*", "", text)
        for match in _PYX_IMPORT.finditer(text):
            base, names, plain = match.groups()
            dotted = base or plain
            if dotted.split(".")[0] not in PACKAGES:
                continue
            line = text.count("\n", 0, match.start()) + 1
            node = ast.Pass(lineno=line)
            names = [n.split()[0] for n in names.strip("()").split(",") if n.split()] \
                if names else [None]
            for attribute in names:
                target, attr = reader._resolve(dotted, attribute)
                if target:
                    reader._add(target, attr, node)
        imports += reader.imports
    return imports


# ----------------------------------------------------------------------------- the rules

def _matches(module, pattern):
    if pattern.startswith("="):
        return module == pattern[1:]
    return fnmatch.fnmatchcase(module, pattern) or fnmatch.fnmatchcase(module, pattern + ".*")


def floor_of(module):
    """``(index, floor name)`` of the most specific pattern matching ``module``, or None."""
    best = None
    for index, (floor, patterns) in enumerate(FLOORS):
        for pattern in patterns:
            if _matches(module, pattern) and (best is None or len(pattern) > best[0]):
                best = (len(pattern), index, floor)
    return best and best[1:]


def upward_imports(imports):
    """Imports of a higher floor, less the allowed ones (and the allowed ones used)."""
    found, used = [], set()
    for item in imports:
        low, high = floor_of(item.importer), floor_of(item.target)
        if low is None or high is None or high[0] <= low[0]:
            continue
        if item.importer in LAZY_FACADES and not item.module_level:
            continue
        key = next((k for k in ALLOWED_UPWARD if item.importer == k[0]
                    and _matches(item.target, k[1])), None)
        if key:
            used.add(key)
        else:
            found.append("%r  (%s floor imports %s floor)" % (item, low[1], high[1]))
    return found, used


def _is_private(name):
    return name.startswith("_") and not name.startswith("__")


def _private_owner(target, name):
    """The module or package a private name belongs to, or None for a public name."""
    parts = target.split(".")
    for index, part in enumerate(parts):
        if _is_private(part):   # a _module, and all its names: its package's
            return ".".join(parts[:index])
    return target if name and _is_private(name) else None


def private_imports(imports):
    """Imports of another module's or package's private names, less the allowed ones."""
    found, used = [], set()
    for item in imports:
        owner = _private_owner(item.target, item.name)
        if owner is None or item.importer == owner or item.importer.startswith(owner + "."):
            continue
        private = item.target + (":" + item.name if item.name else "")
        key = next((k for k in ALLOWED_PRIVATE if fnmatch.fnmatchcase(item.importer, k[0])
                    and fnmatch.fnmatchcase(private, k[1])), None)
        if key:
            used.add(key)
        else:
            found.append("%r  (private to %s)" % (item, owner))
    return found, used


def import_cycles(imports):
    """Strongly connected sets of modules under module-level imports (Tarjan's)."""
    graph = {}
    for item in imports:
        if item.module_level and item.target != item.importer:
            graph.setdefault(item.importer, set()).add(item.target)
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def connect(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in graph.get(node, ()):
            if successor not in index:
                connect(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            members = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                members.add(member)
                if member == node:
                    break
            if len(members) > 1:
                cycles.append(members)
    for node in sorted(graph):
        if node not in index:
            connect(node)
    return cycles


def _cycle_allowed(members):
    for index, (patterns, _) in enumerate(ALLOWED_CYCLES):
        if all(any(_matches(m, p) for p in patterns) for m in members):
            return index
    return None


# ----------------------------------------------------------------------------- the tests

@pytest.fixture(scope="module")
def source():
    modules = module_files(ROOT)
    return modules, read_imports(ROOT, modules)


def test_every_module_is_on_a_floor(source):
    modules, _ = source
    missing = [m for m in modules if floor_of(m) is None]
    assert not missing, ("modules on no floor (add them to FLOORS here and to "
                         "ARCHITECTURE.md): %s" % missing)


def test_lower_floors_never_import_higher_ones(source):
    _, imports = source
    found, used = upward_imports(imports)
    assert not found, "imports that go up a floor:\n  " + "\n  ".join(found)
    stale = set(ALLOWED_UPWARD) - used
    assert not stale, "ALLOWED_UPWARD entries that match nothing (remove them): %s" % stale


def test_private_names_stay_inside(source):
    modules, imports = source
    outside = module_files(ROOT, OUTSIDE)
    outside_imports = [i for i in read_imports(ROOT, {**modules, **outside})
                       if i.importer in outside]
    found, used = private_imports(imports + outside_imports)
    assert not found, "private names used outside their module or package:\n  " + \
        "\n  ".join(found)
    stale = {k for k in ALLOWED_PRIVATE if "*" not in "".join(k)} - used   # patterns may rest
    assert not stale, "ALLOWED_PRIVATE entries that match nothing (remove them): %s" % stale


def test_only_the_kernels_import_fastdl_ext(source):
    _, imports = source
    found = [repr(i) for i in imports if i.target.split(".")[0] == "fastdl_ext"
             and not _matches(i.importer, "fastdl.kernels")
             and not _matches(i.importer, "fastdl_ext")]
    assert not found, "the compiled extension is the kernels' to call:\n  " + "\n  ".join(found)


def test_no_import_cycles(source):
    _, imports = source
    cycles = import_cycles(imports)
    bad = [sorted(c) for c in cycles if _cycle_allowed(c) is None]
    assert not bad, "module-level import cycles: %s" % bad
    stale = set(range(len(ALLOWED_CYCLES))) - {_cycle_allowed(c) for c in cycles}
    assert not stale, "ALLOWED_CYCLES entries that match nothing (remove them): %s" % [
        sorted(ALLOWED_CYCLES[i][0]) for i in stale]


def test_checks_catch_planted_violations(tmp_path):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package,
                        ignore=shutil.ignore_patterns("*.so", "*.c", "__pycache__"))
    shapes = tmp_path / "fastdl" / "shapes.py"
    shapes.write_text(shapes.read_text() + "\n\ndef _planted():\n"
                      "    from fastdl.nn import Module\n"
                      "    import importlib\n"
                      "    importlib.import_module('fastdl.train')\n"
                      "    from fastdl.kernels._jit import jit\n"
                      "    return Module, jit\n")
    random = tmp_path / "fastdl" / "random.py"
    random.write_text(random.read_text() + "\nfrom fastdl import shapes  # noqa\n")
    shapes.write_text("from fastdl import random  # noqa\n" + shapes.read_text())
    (tmp_path / "fastdl" / "planted.py").write_text("")
    modules = module_files(tmp_path)
    assert floor_of("fastdl.planted") is None and "fastdl.planted" in modules
    imports = read_imports(tmp_path, modules)
    upward, _ = upward_imports(imports)
    assert any("fastdl.shapes" in f and "fastdl.nn" in f for f in upward)
    assert any("fastdl.shapes" in f and "fastdl.train" in f for f in upward)
    private, _ = private_imports(imports)
    assert any("fastdl.kernels._jit" in f for f in private)
    cycles = import_cycles(imports)
    assert {"fastdl.random", "fastdl.shapes"} in cycles
