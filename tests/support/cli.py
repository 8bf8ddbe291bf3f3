"""Running ``carnet`` commands in the test process.

A command started as a process costs about a second of imports before it does anything; the
commands' own behaviour (arguments, output, exit status, what they write to the database) is the
same when click runs them here. ``tests/functional/test_cli.py`` keeps starting the real entry
point as a process.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from click.testing import CliRunner, Result

from carnet.cli.main import main
from carnet.config import Settings


def no_env() -> dict[str, str | None]:
    """Every CARNET_ variable unset while the command runs, and put back afterwards by click (the
    command may set some itself, as ``--data`` sets CARNET_DATA_DIR)."""
    names = {f"CARNET_{n.upper()}" for n in Settings.model_fields} | {k for k in os.environ
                                                                       if k.startswith("CARNET_")}
    return dict.fromkeys(names, None)


def run_carnet(*args: str, env: Mapping[str, str] | None = None, input: str | None = None) -> Result:
    """``carnet ARGS`` with the CARNET_* settings of ``env`` and nothing else of the kind."""
    return CliRunner().invoke(main, list(args), env=no_env() | dict(env or {}), input=input,
                              catch_exceptions=False)
