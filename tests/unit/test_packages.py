"""Each package's docstring names its modules: the map a reader opens first stays whole."""

import importlib
import re
from pathlib import Path

import pytest


@pytest.mark.parametrize("package", ["tracer.explain", "tracer.kernel", "tracer.sinks"])
def test_a_package_docstring_names_every_module(package):
    mod = importlib.import_module(package)
    doc = mod.__doc__ or ""
    modules = sorted(p.stem for p in Path(mod.__file__).parent.glob("*.py") if p.stem != "__init__")
    missing = [m for m in modules if not re.search(rf"\b{m}\b", doc)]
    assert not missing, f"{package}'s docstring does not name {missing}"
