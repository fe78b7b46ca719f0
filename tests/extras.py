"""Tests that need an optional extra are skipped, naming the extra, where it is not installed:
the suite collects and runs on an install with none of them."""

from __future__ import annotations

from importlib.util import find_spec
from types import ModuleType

import pytest


def _reason(extra: str, absent: list[str]) -> str:
    how = "pip install -e '.[dev]'" if extra == "dev" else f"pip install 'recursa[{extra}]'"
    return f"{', '.join(absent)} not installed: needs the {extra} extra ({how})"


def _absent(modules: tuple[str, ...]) -> list[str]:
    return [name for name in modules if find_spec(name) is None]


def needs_extra(extra: str, *modules: str) -> pytest.MarkDecorator:
    """A mark that skips the test (or the module, as `pytestmark`) without `modules`."""
    absent = _absent(modules)
    return pytest.mark.skipif(bool(absent), reason=_reason(extra, absent))


def require_extra(extra: str, *modules: str) -> None:
    """Skip the running test (from a helper or fixture) without `modules`."""
    if absent := _absent(modules):
        pytest.skip(_reason(extra, absent))


def import_extra(module: str, extra: str) -> ModuleType:
    """`module` imported, or the whole test module skipped at collection."""
    return pytest.importorskip(module, reason=_reason(extra, [module]))
