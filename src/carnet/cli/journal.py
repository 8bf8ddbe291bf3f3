"""``carnet journal``: sealing the audit log's daily journals and verifying their chain (SPEC C6).

``seal`` is meant to run from a scheduler shortly after midnight UTC (it seals every complete day
not sealed yet, so a missed run is caught up by the next one); ``verify`` exits 1 naming the first
day whose journal fails, so a scheduler's failure report says where to look.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import click

from carnet.cli.keys import _engine, data_option

_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _day(_ctx: click.Context, _param: click.Parameter, value: str | None) -> date | None:
    if value is None:
        return None
    try:
        if not _DAY.fullmatch(value):
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a day YYYY-MM-DD") from None


@click.group("journal")
def journal_group() -> None:
    """Sealed daily journals of the audit log: signed, fingerprinted, chained (NF Z42-013)."""


@journal_group.command("seal")
@data_option
@click.option("--day", callback=_day, default=None, metavar="YYYY-MM-DD",
              help="seal this past UTC day (and any unsealed day before it); default: every complete "
                   "day not sealed yet")
def seal(data: Path | None, day: date | None) -> None:
    """Sequence pending audit entries, then seal the journals of past UTC days, in day order."""
    from carnet.audit.journal import open_journal_store, seal_due, seal_until
    from carnet.audit.sink import take_in
    from carnet.ledger.keys import load_signer

    with _engine(data) as (settings, engine):
        take_in(settings, engine)  # the reads still in the server's spool go to their day's journal too
        store = open_journal_store(settings)
        signer = load_signer(settings)
        journals = seal_due(engine, store, signer) if day is None else seal_until(engine, store, signer, day)
    if not journals:
        click.echo("no complete day to seal")
    for journal in journals:
        state = "sealed" if journal.created else "already sealed"
        click.echo(f"{journal.day.isoformat()}  {state:<14}  leaves [{journal.first_index}, "
                   f"{journal.end_index})  sha256 {journal.sha256}")


@journal_group.command("verify")
@data_option
@click.option("--key", default=None,
              help="verifier key of the log (text, or a file holding it); default: the local ledger key")
def verify(data: Path | None, key: str | None) -> None:
    """Check every sealed journal in day order; exit status 1 naming the first day that fails."""
    from carnet.audit.journal import open_journal_store, verify_journals
    from carnet.ledger.keys import load_signer
    from carnet.ledger.note import NoteVerifier

    with _engine(data) as (settings, engine):
        text = key if key is None or not Path(key).is_file() else Path(key).read_text()
        try:
            verifier = NoteVerifier.from_key(text.strip() if text else load_signer(settings).verifier_key())
        except ValueError as exc:
            raise click.ClickException(f"the verifier key is not valid: {exc}") from None
        report = verify_journals(engine, open_journal_store(settings), verifier)
    if report.journals:
        click.echo(f"{report.journals} journal(s) verify, {report.first_day} to {report.last_day}, "
                   f"{report.leaves} leaves; last journal sha256 {report.head}")
    if not report.ok:
        where = report.failed_day.isoformat() if report.failed_day else "a journal"
        raise click.ClickException(f"journal {where} fails: {report.reason}")
    if not report.journals:
        click.echo("no journal sealed yet")
