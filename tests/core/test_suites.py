"""pooladapt.testing.suites: a shared test file's tests taken into another file."""

from __future__ import annotations

import pytest

from pooladapt.testing.suites import adopt_tests


def test_adopted_tests_are_the_file_s_test_functions_only(tmp_path):
    path = tmp_path / "shared.py"
    path.write_text("def helper():\n    return 1\n\n\ndef test_one():\n    return 'one'\n")
    namespace: dict = {}
    adopt_tests(path, "pooladapt_shared_a", namespace)
    assert list(namespace) == ["test_one"] and namespace["test_one"]() == "one"
    with pytest.raises(ValueError, match="taken twice: \\['test_one'\\]"):
        adopt_tests(path, "pooladapt_shared_b", namespace)
