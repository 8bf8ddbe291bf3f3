"""What the fuzz harnesses share: the property helpers (plain functions, no atheris) and the atheris
entry point (:func:`fuzz`, which imports atheris only when a harness is run as a program).

A harness module defines ``check(data: bytes) -> None``: it feeds ``data`` to the code under test and
raises :class:`PropertyFailed` (an ``AssertionError``) when a property does not hold; any other
exception escaping ``check`` is an unexpected error of the code under test. libFuzzer counts both as
crashes and writes the input to a ``crash-*`` file. ``tests/unit/test_fuzz_corpora.py`` replays every
committed corpus file through the same ``check`` functions, without atheris.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from carnet.errors import CarnetError

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"


class PropertyFailed(AssertionError):
    """A property of the code under test does not hold for this input."""


def require(condition: object, message: str) -> None:
    if not condition:
        raise PropertyFailed(message)


def is_bilingual(text: str) -> bool:
    """``carnet.errors.bilingual``'s shape: a French part, " / ", an English part, both non-empty."""
    fr, sep, en = text.partition(" / ")
    return bool(sep and fr.strip() and en.strip())


def check_error(exc: CarnetError, allowed: tuple[type[CarnetError], ...], *, bilingual: bool,
                expression: Sequence[str] | None = None) -> None:
    """A refusal of the documented kind: one of ``allowed``, with at least one issue, each with a
    diagnostic (bilingual when ``bilingual``) and, when ``expression`` is given, that expression."""
    require(isinstance(exc, allowed), f"unexpected error type {type(exc).__name__}: {exc}")
    require(exc.issues, f"{type(exc).__name__} without issues: {exc}")
    for issue in exc.issues:
        require(issue.diagnostics, f"issue without diagnostics in {type(exc).__name__}")
        if bilingual:
            require(is_bilingual(issue.diagnostics), f"message not bilingual: {issue.diagnostics!r}")
        if expression is not None:
            require(list(issue.expression) == list(expression),
                    f"issue expression {issue.expression!r}, expected {list(expression)!r}")


def corpus_files(target: str) -> list[Path]:
    folder = CORPUS / target
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


def fuzz(check: Callable[[bytes], None], argv: list[str] | None = None) -> None:
    """Run ``check`` under atheris/libFuzzer with the command-line flags in ``argv``. The harness must
    have imported the code under test inside :func:`instrumented` for coverage to be collected."""
    import atheris  # the optional extra "fuzz"

    atheris.Setup(sys.argv if argv is None else argv, check)
    atheris.Fuzz()


def instrumented(*modules: str) -> None:
    """Import ``modules`` with atheris's coverage instrumentation of every ``carnet`` module they load.
    Harnesses call it only when run as a program (``__main__``), before their own imports of the same
    modules, so the replay test (which imports them) needs no atheris."""
    import importlib

    import atheris

    with atheris.instrument_imports(include=["carnet"]):
        for name in modules:
            importlib.import_module(name)
