"""Every docstring example in the package runs and gives the output it shows."""

import doctest
import importlib
import pkgutil

import pytest

import ardm

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# Every module of the package except the compiled core (tested below) and ``__main__`` modules,
# which run a program when imported.
MODULES = sorted(
    name
    for _, name, _ in pkgutil.walk_packages(ardm.__path__, "ardm.")
    if not name.startswith("ardm._core") and name.rsplit(".", 1)[-1] != "__main__"
)

# Packages whose docstrings must carry examples, with the fewest examples each must have; the
# package has ~250 in all. A walk that silently finds nothing (a renamed package, a broken
# import path) fails here instead of passing with zero examples.
REQUIRED = {
    "ardm.models": 80,
    "ardm.nets": 15,
    "ardm.modalities": 2,
    "ardm.training": 2,
    "ardm.coding": 20,
    "ardm.checkpoint": 5,
    "ardm.evaluate": 10,
}
MIN_EXAMPLES = 200


def _examples(name: str) -> int:
    module = importlib.import_module(name)
    return sum(len(t.examples) for t in doctest.DocTestFinder().find(module))


def test_examples_are_collected_from_every_package() -> None:
    counts = {name: _examples(name) for name in MODULES}
    for package, minimum in REQUIRED.items():
        found = sum(n for name, n in counts.items() if name == package or name.startswith(package + "."))
        assert found >= minimum, f"{package}: {found} docstring examples, expected >= {minimum}"
    assert sum(counts.values()) >= MIN_EXAMPLES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=FLAGS)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"


def test_core_docstring_examples() -> None:
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for name in dir(ardm._core):
        obj = getattr(ardm._core, name)
        for test in finder.find(obj, name, globs={"ardm": ardm, **vars(ardm._core)}):
            runner.run(test)
    assert runner.tries >= 10, f"only {runner.tries} examples in ardm._core"
    assert runner.failures == 0
