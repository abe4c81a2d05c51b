"""Every docstring example in the package runs and gives the output it shows."""

import doctest
import importlib
import pkgutil

import pytest

import ardm

MODULES = sorted(
    name
    for _, name, _ in pkgutil.walk_packages(ardm.__path__, "ardm.")
    if not name.startswith("ardm._core")
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


def test_core_docstring_examples():
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for name in dir(ardm._core):
        obj = getattr(ardm._core, name)
        for test in finder.find(obj, name, globs={"ardm": ardm, **vars(ardm._core)}):
            runner.run(test)
    assert runner.failures == 0
