"""The ``carnet`` command: thin commands over the same services as the HTTP API."""

from __future__ import annotations

import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import click

from carnet.cli.backup import backup_command, restore_command
from carnet.cli.clients import account_group, client_group
from carnet.cli.identity import identity_group
from carnet.cli.journal import journal_group
from carnet.cli.keys import blobs_group, keys_group
from carnet.cli.ledger import ledger_group, verify, verify_proof
from carnet.cli.policy import policy_group
from carnet.config import Mode, Settings, describe

if TYPE_CHECKING:
    from sqlalchemy import Engine


def _settings(data: Path | None = None, **overrides: object) -> Settings:
    """Settings from the environment; command-line options win and are passed on to workers."""
    if data is not None:
        os.environ["CARNET_DATA_DIR"] = str(data)
    for key, value in overrides.items():
        if value is not None:
            os.environ["CARNET_" + key.upper()] = str(value)
    return Settings()


data_option = click.option("--data", type=click.Path(path_type=Path), default=None,
                           help="data folder (default ./carnet-data, or CARNET_DATA_DIR)")


@click.group()
@click.version_option(package_name="carnet")
def main() -> None:
    """Carnet: personal health space and FHIR R4 server."""


def _seal_clear_secrets(settings: Settings, engine: Engine) -> None:
    """Seal what an earlier version stored in clear (TOTP secrets) once the schema has room."""
    from carnet.auth.accounts import AccountStore

    sealed = AccountStore(settings, engine).seal_clear_secrets()
    if sealed:
        click.echo(f"sealed {sealed} TOTP secrets stored in clear", err=True)


@main.command()
@data_option
def migrate(data: Path | None) -> None:
    """Create or upgrade the database schema to the newest revision."""
    from carnet.db.engine import make_engine
    from carnet.db.migrate import current_revision, upgrade

    settings = _settings(data)
    engine = make_engine(settings)
    upgrade(engine)
    _seal_clear_secrets(settings, engine)
    click.echo(f"database at revision {current_revision(engine)}")
    engine.dispose()


@main.command()
@data_option
@click.option("--host", default=None, help="address to listen on (default 127.0.0.1)")
@click.option("--port", type=int, default=None, help="port to listen on (default 8000)")
@click.option("--workers", type=int, default=None, help="server processes (default 1)")
def serve(data: Path | None, host: str | None, port: int | None, workers: int | None) -> None:
    """Run the server (migrating the database first)."""
    import uvicorn

    from carnet.db.engine import make_engine
    from carnet.db.migrate import upgrade

    settings = _settings(data, host=host, port=port, workers=workers)
    engine = make_engine(settings)
    upgrade(engine)
    _seal_clear_secrets(settings, engine)
    engine.dispose()
    settings.signing_key()  # create the development key once, before workers start
    click.echo(f"Carnet is running at {settings.public_base_url}/  (FHIR base "
               f"{settings.public_base_url}/fhir, data in {settings.data_dir})", err=False)
    sys.stdout.flush()
    from carnet.api.limits import uvicorn_options
    from carnet.ledger.process import supervise, wanted

    # the sequencer and SQLite's checkpointer in a process of their own (docs/ledger.md)
    with supervise() if wanted(settings) else nullcontext():
        # the protocol closes connections that send nothing or trickle their headers (docs/limits.md)
        uvicorn.run("carnet.app:create_app", factory=True, host=settings.host, port=settings.port,
                    workers=settings.workers, log_level=settings.log_level, access_log=False,
                    **uvicorn_options())


@main.command()
@data_option
@click.option("--patients", type=int, default=25, show_default=True, help="synthetic patients to create")
@click.option("--seed", type=int, default=2026, show_default=True, help="random seed")
def demo(data: Path | None, patients: int, seed: int) -> None:
    """Seed synthetic demo data: organisations, practitioners, patients and their observations."""
    from carnet import demo as demo_data
    from carnet.db.engine import make_engine
    from carnet.db.migrate import upgrade

    settings = _settings(data)
    engine = make_engine(settings)
    upgrade(engine)
    loaded = demo_data.load(settings, engine, patients=patients, seed=seed)
    engine.dispose()
    summary = ", ".join(f"{n} {t}" for t, n in sorted(loaded.counts.items()))
    click.echo(f"demo data loaded: {summary}")
    click.echo(f"demo sign-in at {settings.public_base_url}/ — patients: « patient » (an adult) or "
               f"« parent » (with a child), password {demo_data.DEMO_PASSWORD}, one-time code in the "
               "server's log; professionals (development provider):")
    for name, role, _ in loaded.professionals:
        click.echo(f"  {name}: {role}")


@main.command()
@data_option
@click.option("--as", "as_", required=True,
              help="who the token is for: practitioner:<national id>, patient:<INS matricule> or system")
@click.option("--ttl", type=int, default=None,
              help="lifetime in seconds (default CARNET_ACCESS_TOKEN_TTL_SECONDS)")
def token(data: Path | None, as_: str, ttl: int | None) -> None:
    """Print an access token (development mode only)."""
    from carnet.auth import people
    from carnet.auth.issuer import TokenIssuer
    from carnet.auth.principal import Principal
    from carnet.db.engine import make_engine
    from carnet.db.migrate import upgrade
    from carnet.errors import CarnetError
    from carnet.wiring import build_router

    settings = _settings(data)
    if settings.mode != Mode.DEVELOPMENT:
        raise click.ClickException("tokens are issued by this command in development mode only")
    kind, _, who = as_.partition(":")
    if kind not in ("practitioner", "patient", "system") or (kind != "system") != bool(who):
        raise click.ClickException("--as: practitioner:<national id>, patient:<INS matricule> or system")
    engine = make_engine(settings)
    try:
        upgrade(engine)
        if kind == "system":
            principal = Principal.system()
        else:
            router = build_router(settings, engine)
            if kind == "practitioner":
                principal = people.practitioner_principal(router, who)
            else:
                principal = people.patient_principal(router, people.patient_by_matricule(router, who))
        click.echo(TokenIssuer(settings, engine).issue(principal, ttl, client_id="carnet-cli"))
    except CarnetError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        engine.dispose()


@main.command()
@data_option
def config(data: Path | None) -> None:
    """Print every setting: value (secrets masked), where it came from, and what it does."""
    settings = _settings(data)
    for row in describe(settings):
        click.echo(f"{row['env']:<28} {row['value']:<40} [{row['source']}]")
        click.echo(f"    {row['help']}")


@main.group()
def directory() -> None:
    """Directory of health professionals and organisations."""


@directory.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@data_option
@click.option("--batch-size", type=int, default=200, show_default=True, help="rows per transaction")
def directory_import(file: Path, data: Path | None, batch_size: int) -> None:
    """Load a directory extract (national directory CSV extraction, or a FHIR Bundle), idempotently."""
    from carnet.db.engine import make_engine
    from carnet.db.migrate import upgrade
    from carnet.directory import services
    from carnet.errors import CarnetError

    settings = _settings(data)
    engine = make_engine(settings)
    upgrade(engine)
    try:
        source = services.open_source(file)
        with click.progressbar(length=source.total, label=f"importing {file.name}", file=sys.stderr,
                               show_pos=True) as bar:
            report = services.import_source(settings, engine, source, batch_size=batch_size,
                                            progress=bar.update)
    except CarnetError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        engine.dispose()
    for line in services.describe(report, unit="entry" if source.kind == "bundle" else "line"):
        click.echo(line)


@main.command()
@data_option
@click.option("--type", "types", multiple=True, help="resource type to reindex (repeatable; default all)")
@click.option("--batch-size", type=click.IntRange(min=1), default=500, show_default=True,
              help="resources per transaction")
def reindex(data: Path | None, types: tuple[str, ...], batch_size: int) -> None:
    """Rebuild the search index and the identity match keys of stored resources (after an upgrade
    that adds search parameters, or for data stored before an index existed)."""
    from carnet.db.engine import make_engine
    from carnet.db.migrate import upgrade
    from carnet.fhir import reindex as reindexing
    from carnet.fhir.searchparams import resource_types
    from carnet.wiring import build_router

    unknown = sorted(set(types) - resource_types())
    if unknown:
        raise click.ClickException(f"unknown resource type(s): {', '.join(unknown)}")
    settings = _settings(data)
    engine = make_engine(settings)
    upgrade(engine)
    try:
        router = build_router(settings, engine)
        total = reindexing.count(router, types or None)
        with click.progressbar(length=total, label="reindexing", file=sys.stderr, show_pos=True) as bar:
            done = reindexing.reindex(router, types or None, batch=batch_size, progress=bar.update)
    finally:
        engine.dispose()
    click.echo(f"{done} resource(s) reindexed")


main.add_command(identity_group)
main.add_command(keys_group)
main.add_command(policy_group)
main.add_command(blobs_group)
main.add_command(client_group)
main.add_command(account_group)
main.add_command(journal_group)
main.add_command(verify)
main.add_command(verify_proof)
main.add_command(ledger_group)
main.add_command(backup_command)
main.add_command(restore_command)

if __name__ == "__main__":
    main()
