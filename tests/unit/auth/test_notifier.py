"""The development notifier writes one-time codes to the log, except in production mode, where a
secret never reaches a log (a sign-in by sent code then needs a configured notifier)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from carnet.app import create_app
from carnet.auth.accounts import LogNotifier, load_notifier
from carnet.config import Mode, Settings
from carnet.db.engine import make_engine
from carnet.db.migrate import upgrade


def test_in_development_the_code_is_in_the_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="carnet.notify"):
        load_notifier("log").send_code("sms", "camille", "482913")
    assert "482913" in caplog.text


def test_in_production_the_code_never_reaches_the_log(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        load_notifier("log", production=True).send_code("sms", "camille", "482913")
    assert "482913" not in caplog.text
    assert "camille" in caplog.text and "CARNET_NOTIFIER" in caplog.text  # the operator sees why


def test_a_production_server_uses_the_notifier_that_writes_no_code(tmp_path: Path) -> None:
    settings = Settings(mode=Mode.PRODUCTION, data_dir=tmp_path, secret_key="k" * 32)
    engine = make_engine(settings)
    upgrade(engine)
    engine.dispose()
    notifier = create_app(settings).state.signin.notifier
    assert isinstance(notifier, LogNotifier) and notifier.production
    development = create_app(settings.model_copy(update={"mode": Mode.DEVELOPMENT})).state.signin.notifier
    assert isinstance(development, LogNotifier) and not development.production
