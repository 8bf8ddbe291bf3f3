"""``carnet client`` (OAuth clients of the authorisation server) and ``carnet account`` (patients'
sign-in accounts)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from carnet.config import Settings


def _settings(data: Path | None) -> Settings:
    from carnet.cli.main import _settings as settings_of

    return settings_of(data)


data_option = click.option(
    "--data",
    type=click.Path(path_type=Path),
    default=None,
    help="data folder (default ./carnet-data, or CARNET_DATA_DIR)",
)


def _engine(settings: Settings):  # type: ignore[no-untyped-def]
    from carnet.db.engine import make_engine
    from carnet.db.migrate import upgrade

    engine = make_engine(settings)
    upgrade(engine)
    return engine


@click.group("client")
def client_group() -> None:
    """OAuth clients of the authorisation server (SMART apps, backend services)."""


@client_group.command("add")
@click.argument("name")
@click.option(
    "--type",
    "client_type",
    type=click.Choice(["confidential", "public", "backend"]),
    required=True,
    help="confidential (a secret), public (PKCE only) or backend (private_key_jwt)",
)
@click.option(
    "--redirect-uri", "redirect_uris", multiple=True, help="redirect URI (repeatable; not for backend)"
)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    required=True,
    help="scopes the client may be granted (repeatable, or space-separated)",
)
@click.option(
    "--jwks-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="backend clients: their public keys (a JWKS, one JWK, or a PEM public key)",
)
@click.option("--client-id", default=None, help="the client id (default: generated)")
@data_option
def client_add(
    name: str,
    client_type: str,
    redirect_uris: tuple[str, ...],
    scopes: tuple[str, ...],
    jwks_file: Path | None,
    client_id: str | None,
    data: Path | None,
) -> None:
    """Register a client. A confidential client's secret is printed once, now, and never again."""
    from carnet.auth.clients import ClientStore, ClientType, load_jwks
    from carnet.errors import CarnetError

    settings = _settings(data)
    engine = _engine(settings)
    try:
        jwks = load_jwks(jwks_file.read_text(encoding="utf-8")) if jwks_file else None
        scope = [s for chunk in scopes for s in chunk.split()]
        client, secret = ClientStore(engine).add(
            name,
            ClientType(client_type),
            redirect_uris=list(redirect_uris),
            scope=scope,
            jwks=jwks,
            client_id=client_id,
        )
        _record_admin(settings, engine, "client-add", {"client_id": client.client_id,
                                                      "type": client_type, "scope": " ".join(client.scope)})
    except CarnetError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        engine.dispose()
    click.echo(f"client_id: {client.client_id}")
    if secret:
        click.echo(f"client_secret: {secret}")
        click.echo("(the secret is shown once: keep it now; only its hash is stored)", err=True)
    click.echo(f"scope: {' '.join(client.scope)}")
    click.echo(f"token endpoint: {settings.public_base_url}/oauth/token")


@client_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per client")
@data_option
def client_list(as_json: bool, data: Path | None) -> None:
    """Registered clients (never their secrets)."""
    from carnet.auth.clients import ClientStore

    engine = _engine(_settings(data))
    try:
        clients = ClientStore(engine).all()
    finally:
        engine.dispose()
    for client in clients:
        row = client.describe()
        if as_json:
            click.echo(json.dumps(row, ensure_ascii=False))
        else:
            uris = " ".join(row["redirect_uris"]) or "-"
            click.echo(
                f"{row['client_id']:<24} {row['type']:<12} {row['name']:<24} scope: {row['scope']}  "
                f"redirect: {uris}"
            )
    if not clients:
        click.echo("no client registered", err=True)


@client_group.command("remove")
@click.argument("client_id")
@data_option
def client_remove(client_id: str, data: Path | None) -> None:
    """Remove a client and its refresh tokens (its access tokens die within their short lifetime)."""
    from carnet.auth.clients import ClientStore
    from carnet.errors import CarnetError

    settings = _settings(data)
    engine = _engine(settings)
    try:
        ClientStore(engine).remove(client_id)
        _record_admin(settings, engine, "client-remove", {"client_id": client_id})
    except CarnetError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        engine.dispose()
    click.echo(f"client {client_id} removed")


@click.group("account")
def account_group() -> None:
    """Patients' sign-in accounts (username, password, one-time code)."""


@account_group.command("add-patient")
@click.option("--matricule", required=True, help="the patient's INS matricule (their Patient must exist)")
@click.option("--username", required=True, help="the sign-in name")
@click.option(
    "--password",
    default=None,
    help="the password (default: asked on the terminal, or read from standard input)",
)
@click.option(
    "--channel",
    default=None,
    help="send one-time codes there (through CARNET_NOTIFIER) instead of enrolling an authenticator",
)
@data_option
def account_add_patient(
    matricule: str, username: str, password: str | None, channel: str | None, data: Path | None
) -> None:
    """Create a patient's account; prints the TOTP secret and its otpauth:// URI to enrol an authenticator."""
    import pyotp

    from carnet.auth import people
    from carnet.auth.accounts import AccountStore
    from carnet.errors import CarnetError
    from carnet.wiring import build_router

    settings = _settings(data)
    if password is None:
        password = (
            click.prompt("password", hide_input=True, confirmation_prompt=True)
            if sys.stdin.isatty()
            else sys.stdin.readline().rstrip("\n")
        )
    engine = _engine(settings)
    try:
        patient = people.patient_by_matricule(build_router(settings, engine), matricule)
        secret = AccountStore(settings, engine).add(
            username, password, patient["id"], totp=channel is None, channel=channel
        )
        _record_admin(settings, engine, "account-add", {"username": username.strip().lower()},
                     patient=patient["id"])
    except CarnetError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        engine.dispose()
    click.echo(f"account {username.strip().lower()} → Patient/{patient['id']}")
    if secret:
        uri = pyotp.TOTP(secret).provisioning_uri(name=username.strip().lower(), issuer_name="Carnet")
        click.echo(f"totp secret: {secret}")
        click.echo(f"otpauth uri: {uri}")
    else:
        click.echo(f"one-time codes sent to {channel}")


@account_group.command("remove")
@click.argument("username")
@data_option
def account_remove(username: str, data: Path | None) -> None:
    """Delete a patient's account (their record is untouched)."""
    from carnet.auth.accounts import AccountStore
    from carnet.errors import CarnetError

    settings = _settings(data)
    engine = _engine(settings)
    try:
        store = AccountStore(settings, engine)
        account = store.get(username)
        store.remove(username)
        _record_admin(settings, engine, "account-remove", {"username": username.strip().lower()},
                     patient=account.patient_id if account is not None else None)
    except CarnetError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        engine.dispose()
    click.echo(f"account {username.strip().lower()} removed")


def _record_admin(*args: object, **kw: object) -> None:
    from carnet.audit.sink import record_admin

    record_admin(*args, **kw)  # type: ignore[arg-type]
