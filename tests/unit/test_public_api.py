"""The public surface: `taskq.__all__` is exactly what the package exports, and sorted."""

from __future__ import annotations
import __future__

import inspect
import types

import taskq
from taskq import exceptions


def public_names() -> set[str]:
    """Names a user can import from taskq: not private, not submodules, not future flags."""
    return {
        name
        for name, value in vars(taskq).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType | __future__._Feature)
    }


def test_all_is_sorted() -> None:
    assert taskq.__all__ == sorted(taskq.__all__)


def test_all_has_no_duplicates() -> None:
    assert len(taskq.__all__) == len(set(taskq.__all__))


def test_all_is_exactly_the_exported_names() -> None:
    # Given everything importable from taskq; Then __all__ lists each one, and no other
    assert set(taskq.__all__) == public_names()


def test_every_exported_exception_derives_from_taskq_error() -> None:
    exported = [getattr(taskq, name) for name in taskq.__all__]
    errors = [value for value in exported if isinstance(value, type)]
    errors = [value for value in errors if issubclass(value, BaseException)]
    assert errors, "no exceptions exported"
    # Retry is control flow a task raises, not an error taskq raises.
    assert [e.__name__ for e in errors if not issubclass(e, taskq.TaskqError)] == ["Retry"]


def test_every_error_taskq_defines_is_exported() -> None:
    defined = {
        name
        for name, value in vars(exceptions).items()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == exceptions.__name__
    }
    assert defined <= set(taskq.__all__), defined - set(taskq.__all__)


def test_the_error_tree_in_the_docstring_names_every_error() -> None:
    doc = exceptions.__doc__ or ""
    for name, value in vars(exceptions).items():
        if inspect.isclass(value) and value.__module__ == exceptions.__name__:
            assert name in doc, f"{name} is missing from the tree in exceptions.py"
