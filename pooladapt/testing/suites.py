"""Run one test module's tests again from another file (a suite shared by several
framework backends, each selecting its backend before the framework is imported)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any


def adopt_tests(path: str | Path, module: str, namespace: dict[str, Any]) -> None:
    """Load the test file ``path`` as module ``module`` and put its ``test_*`` functions into
    ``namespace`` (the calling test file's ``globals()``); a name already there is an error."""
    spec = importlib.util.spec_from_file_location(module, path)
    if spec is None or spec.loader is None:
        raise ValueError(f"cannot load tests from {path}")
    loaded = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loaded)
    tests = {k: v for k, v in vars(loaded).items() if k.startswith("test_")}
    taken = set(tests) & set(namespace)
    if taken:
        raise ValueError(f"test names taken twice: {sorted(taken)}")
    namespace.update(tests)
