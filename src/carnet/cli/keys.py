"""``carnet keys`` (master keys that wrap the patients' data keys) and ``carnet blobs`` (stored
document content): the operator's housekeeping.

Nothing here prints key material: master keys are named by their id, a public fingerprint
(:attr:`carnet.crypto.keys.MasterKey.id`). Domain errors end the command with a one-line message
and exit status 1.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import click

from carnet.errors import CarnetError

if TYPE_CHECKING:
    from sqlalchemy import Engine

    from carnet.config import Settings

data_option = click.option("--data", type=click.Path(path_type=Path), default=None,
                           help="data folder (default ./carnet-data, or CARNET_DATA_DIR)")

_KEY_ID = re.compile(r"[0-9a-f]{16}")


@contextmanager
def _engine(data: Path | None) -> Iterator[tuple[Settings, Engine]]:
    """Settings and a migrated engine, disposed afterwards; a CarnetError becomes a one-line message."""
    from carnet.cli.main import _settings
    from carnet.db.engine import make_engine
    from carnet.db.migrate import upgrade

    settings = _settings(data)
    engine = make_engine(settings)
    try:
        upgrade(engine)
        yield settings, engine
    except CarnetError as exc:
        raise click.ClickException(exc.message) from None
    finally:
        engine.dispose()


@click.group("keys")
def keys_group() -> None:
    """Master keys: they wrap each patient's data key (never printed, named by their id)."""


@keys_group.command("init")
@data_option
def init(data: Path | None) -> None:
    """Make every key once, before the first start: the master key, the access tokens' signing key
    and the log's signing key, in the keys folder (CARNET_KEYS_DIR). Keys already there are kept.
    Give every node a copy of the folder: a node started on an empty folder makes its own."""
    from carnet.auth.issuer import KEY_FILE as TOKEN_KEY_FILE
    from carnet.auth.issuer import SigningKeys
    from carnet.cli.main import _settings
    from carnet.crypto.keyfiles import CURRENT, load_keyring
    from carnet.ledger.keys import KEY_FILE as LEDGER_KEY_FILE
    from carnet.ledger.keys import load_signer

    settings = _settings(data)
    folder = settings.keys_path
    ledger = settings.ledger_key_file or folder / LEDGER_KEY_FILE
    wanted = {"master key": folder / CURRENT, "token-signing key": folder / TOKEN_KEY_FILE,
              "ledger key": ledger}
    present = {name for name, path in wanted.items() if path.exists()}
    try:
        master_id = load_keyring(folder).current_id
        SigningKeys(folder)
        signer = load_signer(settings)
    except CarnetError as exc:
        raise click.ClickException(exc.message) from None
    click.echo(f"keys folder           {folder}")
    for name, path in wanted.items():
        click.echo(f"  {name:<19} {path.name}  {'kept' if name in present else 'made'}")
    click.echo(f"master key id         {master_id}")
    click.echo(f"ledger verifier key   {signer.verifier_key()}")
    click.echo("copy this folder to every node (mode 0700, files 0600), and keep a copy apart from the data")


@keys_group.command("rotate")
@data_option
def rotate(data: Path | None) -> None:
    """Make a new master key current and rewrap every data key with it (content is not touched)."""
    from carnet.crypto.keyfiles import rotate_master_key
    from carnet.crypto.sqlstore import SqlDataKeyStore

    with _engine(data) as (settings, engine):
        done = rotate_master_key(settings.keys_path, SqlDataKeyStore(engine))
        _record_admin(settings, engine, "keys-rotate", {"old": done.old_key_id, "new": done.new_key_id,
                                                       "rewrapped": str(done.rewrapped)})
    click.echo(f"old master key        {done.old_key_id}")
    click.echo(f"new master key        {done.new_key_id} (current)")
    click.echo(f"data keys rewrapped   {done.rewrapped}")
    click.echo(f"restart running servers; then `carnet keys retire {done.old_key_id}` deletes the old key")


@keys_group.command("status")
@data_option
def status(data: Path | None) -> None:
    """The current master key, the key files present, and how many data keys each master key wraps."""
    from sqlalchemy import func, select

    from carnet.crypto.keyfiles import CURRENT, read_key_file
    from carnet.db.tables import data_keys

    with _engine(data) as (settings, engine):
        folder = settings.keys_path
        with engine.connect() as conn:
            counts: dict[str, int] = {
                r.master_key_id: int(r.n) for r in conn.execute(
                    select(data_keys.c.master_key_id, func.count().label("n"))
                    .group_by(data_keys.c.master_key_id))}
        files: list[tuple[str, str]] = []
        if folder.is_dir():
            names = ([CURRENT] if (folder / CURRENT).is_file() else []) + sorted(
                p.name for p in folder.glob("master-*.key") if p.is_file())
            files = [(name, read_key_file(folder / name).id) for name in names]
    current = next((key_id for name, key_id in files if name == CURRENT), None)
    click.echo(f"keys folder           {folder}")
    click.echo(f"current master key    {current or 'none yet (created when content is first stored)'}")
    click.echo(f"data keys             {sum(counts.values())}")
    held = {key_id for _, key_id in files}
    width = max([len(name) for name, _ in files] + [len(CURRENT)])
    for name, key_id in files:
        note = "  current" if name == CURRENT else ""
        click.echo(f"  {name:<{width}}  {key_id}  wraps {counts.get(key_id, 0)} data key(s){note}")
    missing = {key_id: n for key_id, n in sorted(counts.items()) if key_id not in held}
    for key_id, n in missing.items():
        click.echo(f"  {'(no key file)':<{width}}  {key_id}  wraps {n} data key(s)")
    if missing:
        total = sum(missing.values())
        raise click.ClickException(f"{total} data key(s) are wrapped by master keys missing from {folder}: "
                                   "that content cannot be read")


@keys_group.command("retire")
@click.argument("key_id")
@data_option
def retire(key_id: str, data: Path | None) -> None:
    """Delete the file of old master key KEY_ID; refused while any data key is still wrapped by it."""
    from carnet.crypto.keyfiles import retire_master_key
    from carnet.crypto.sqlstore import SqlDataKeyStore

    if not _KEY_ID.fullmatch(key_id):
        raise click.ClickException(f"{key_id!r} is not a master key id (16 hex digits, as `carnet keys "
                                   "status` shows them)")
    with _engine(data) as (settings, engine):
        retire_master_key(settings.keys_path, key_id, SqlDataKeyStore(engine))
        _record_admin(settings, engine, "keys-retire", {"key": key_id})
    click.echo(f"master key {key_id} retired")


@click.group("blobs")
def blobs_group() -> None:
    """Stored document content."""


@blobs_group.command("sweep")
@data_option
@click.option("--grace-hours", type=click.FloatRange(min=0), default=None,
              help="keep content younger than this (default CARNET_BLOB_ORPHAN_GRACE_HOURS, 24); "
                   "a short grace can remove content whose upload is still in progress")
def sweep(data: Path | None, grace_hours: float | None) -> None:
    """Delete stored content that no document references, once older than the grace period."""
    from carnet.blobs.janitor import sweep_orphans
    from carnet.documents.storage import open_document_store, referenced_keys

    with _engine(data) as (settings, engine):
        hours = settings.blob_orphan_grace_hours if grace_hours is None else grace_hours
        report = sweep_orphans(open_document_store(settings, engine).objects, referenced_keys(engine),
                               grace=timedelta(hours=hours))
    click.echo(f"blobs examined        {report.examined}")
    click.echo(f"orphans deleted       {report.deleted}")
    click.echo(f"kept, referenced      {report.referenced}")
    click.echo(f"kept, recent          {report.recent} (younger than {hours:g} h)")
    click.echo(f"staging files removed {report.staging_removed}")


def _record_admin(*args: object, **kw: object) -> None:
    from carnet.audit.sink import record_admin

    record_admin(*args, **kw)  # type: ignore[arg-type]
