"""Running ``carnet`` commands in the test process.

A command started as a process costs about a second of imports before it does anything; the
commands' own behaviour (arguments, output, exit status, what they write to the database) is the
same when click runs them here. ``tests/functional/test_cli.py`` keeps starting the real entry
point as a process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from click.testing import CliRunner

from carnet.cli.main import main


@dataclass(frozen=True)
class Ran:
    returncode: int
    stdout: str
    stderr: str


@contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    """Only ``env``'s CARNET_* settings while the command runs (a command may set more of them,
    as ``--data`` does); the test process's own environment afterwards."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("CARNET_")}
    for name in saved:
        del os.environ[name]
    os.environ.update(env)
    try:
        yield
    finally:
        for name in [k for k in os.environ if k.startswith("CARNET_")]:
            del os.environ[name]
        os.environ.update(saved)


def run_carnet(*args: str, env: Mapping[str, str], input: str | None = None) -> Ran:
    """``carnet ARGS`` with the CARNET_* settings of ``env`` and nothing else of the kind."""
    with _environment(env):
        result = CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)
    return Ran(result.exit_code, result.stdout, result.stderr)
