"""``carnet verify``, ``carnet verify-proof`` and ``carnet ledger``: checking the transparency log.

``carnet verify`` exits 0 when the whole log checks, 1 naming the first problem otherwise, 2 when
it could not be read at all. The verifier key is the trust anchor: by default the one of the local
key file (``--data``); against a server (``--url``) give it with ``--key`` (the key a server
publishes about itself proves nothing about that server).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from carnet.cli.keys import data_option
from carnet.ledger.note import NoteVerifier


def _verifier(key: str | None) -> NoteVerifier | None:
    if key is None:
        return None
    text = Path(key).read_text().strip() if Path(key).is_file() else key.strip()
    try:
        return NoteVerifier.from_key(text)
    except ValueError as exc:
        raise click.ClickException(f"the verifier key is not valid: {exc}") from None


def _report(report: Any, label: str) -> None:
    click.echo(f"{label}: {report.leaves} leaves, {report.checkpoints} checkpoint(s), "
               f"{report.seconds:.2f} s ({report.rate:,.0f} leaves/s)"
               + (f"; {report.unsigned} leaves after the last checkpoint" if report.unsigned else ""))
    if report.ok:
        click.echo("the log verifies")
        return
    for problem in report.problems[:20]:
        click.echo(f"FAIL {problem}", err=True)
    sys.exit(1)


@click.command("verify")
@data_option
@click.option("--url", default=None, help="check a running server's log instead (its /ledger endpoints)")
@click.option("--key", default=None, help="verifier key (text or a file); default: the local ledger key")
@click.option("--token", default=None, envvar="CARNET_TOKEN",
              help="bearer token of an operator or auditor, to read the entries of a server (--url)")
@click.option("--workers", type=click.IntRange(min=1), default=None,
              help="processes that hash the leaves of a database (default: one per core)")
def verify(data: Path | None, url: str | None, key: str | None, token: str | None,
           workers: int | None) -> None:
    """Recompute the log's tree from its leaves and check every signed checkpoint against it."""
    from carnet.cli.main import _settings
    from carnet.ledger.keys import load_signer, origin_of
    from carnet.ledger.verify import verify_database, verify_server

    verifier = _verifier(key)
    if url is not None:
        import httpx2

        if verifier is None:
            raise click.ClickException("--url needs --key: the verifier key obtained from a trusted source")
        headers = {"authorization": f"Bearer {token}"} if token else {}
        with httpx2.Client(base_url=url.rstrip("/"), headers=headers, timeout=60) as client:
            def get(path: str) -> Any:
                r = client.get(path)
                if r.status_code != 200:
                    where = path.split("?")[0]
                    raise click.ClickException(f"{where} answered {r.status_code}: {r.text[:200]}")
                return r.json()

            _report(verify_server(get, verifier), url)
        return
    from carnet.db.engine import make_engine

    settings = _settings(data)
    if verifier is None:
        verifier = NoteVerifier.from_key(load_signer(settings).verifier_key())
    engine = make_engine(settings)
    try:
        report = verify_database(engine, verifier, origin_of(settings) if key is None else None,
                                 workers=workers)
    finally:
        engine.dispose()
    _report(report, str(settings.data_dir))


@click.command("verify-proof")
@click.argument("proof", type=click.File("r"))
@click.option("--key", required=True, help="the log's verifier key (text or a file), from a trusted source")
def verify_proof(proof: Any, key: str) -> None:
    """Check one entry of an access history offline: PROOF is the JSON answered by
    GET /fhir/AuditEvent/{id}/$inclusion-proof (or '-' to read it from standard input)."""
    from carnet.ledger.verify import entry_proof_from_parameters, verify_entry

    verifier = _verifier(key)
    assert verifier is not None
    try:
        parsed = entry_proof_from_parameters(json.load(proof))
        click.echo(verify_entry(parsed, verifier))
    except ValueError as exc:
        click.echo(f"FAIL {exc}", err=True)
        sys.exit(1)


@click.group("ledger")
def ledger_group() -> None:
    """The transparency log: sequence pending entries, sign a checkpoint, show the verifier key."""


@ledger_group.command("sequence")
@data_option
def sequence(data: Path | None) -> None:
    """Give every pending audit entry its place in the log and sign a checkpoint now."""
    from carnet.cli.keys import _engine
    from carnet.ledger.keys import load_signer, origin_of
    from carnet.ledger.sequencer import Sequencer

    with _engine(data) as (settings, engine):
        progress = Sequencer(engine, load_signer(settings), origin_of(settings)).drain()
    click.echo(f"{progress.sequenced} entries sequenced; the log holds {progress.size}"
               + (f"; checkpoint signed at size {progress.checkpoint}" if progress.checkpoint else ""))


@ledger_group.command("key")
@data_option
def key_command(data: Path | None) -> None:
    """Print the verifier key (signed-note format) that checks this log's checkpoints."""
    from carnet.cli.main import _settings
    from carnet.ledger.keys import load_signer

    click.echo(load_signer(_settings(data)).verifier_key())
