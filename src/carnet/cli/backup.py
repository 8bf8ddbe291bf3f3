"""``carnet backup`` and ``carnet restore``: the embedded mode's backups (docs/backup.md).

A refusal (PostgreSQL, a folder that is not empty, a damaged backup, missing keys) ends the command
with a one-line message and exit status 1, having written nothing.
"""

from __future__ import annotations

import sys
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import click

from carnet.cli.keys import data_option
from carnet.errors import CarnetError


def _progress(total: int, label: str) -> AbstractContextManager[Any]:
    return click.progressbar(length=max(total, 1), label=label, file=sys.stderr)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} bytes"


def _record(settings: Any, action: str, detail: dict[str, str]) -> str | None:
    """Trace the command in the installation's audit log; the reason when it could not be."""
    from carnet.audit.sink import record_admin
    from carnet.db.engine import make_engine

    engine = make_engine(settings)
    try:
        record_admin(settings, engine, action, detail)
    except Exception as exc:  # an older schema, a locked database: the backup itself stands
        return str(exc).splitlines()[0]
    finally:
        engine.dispose()
    return None


@click.command("backup")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@data_option
@click.option("--with-keys/--without-keys", default=True, show_default=True,
              help="copy the keys folder (master keys, signing keys) into the backup")
def backup_command(dest: Path, data: Path | None, with_keys: bool) -> None:
    """Back up the embedded installation (SQLite) into DEST, a new or empty folder, while the server
    may be running: the database (an online snapshot), the document content, the keys, a manifest."""
    from carnet import backup as backups
    from carnet.cli.main import _settings

    settings = _settings(data)
    try:
        report = backups.backup(settings, dest, with_keys=with_keys, progress=_progress)
    except CarnetError as exc:
        raise click.ClickException(exc.message) from None
    m = report.manifest
    ledger = m["ledger"]
    counts = m["counts"]
    click.echo(f"backup written to     {dest}  ({report.seconds:.2f} s, {_size(report.total_bytes)})")
    click.echo(f"database              {backups.DATABASE} ({_size(report.database_bytes)}, revision "
               f"{m['database_revision']})")
    click.echo(f"document content      {report.blob_files} file(s), {_size(report.blob_bytes)} "
               f"({counts['documents']} document content(s), {counts['journals']} journal(s); "
               f"{counts['unreferenced_blob_files']} file(s) no snapshot row references)")
    click.echo(f"key files             {report.key_files}" if with_keys else "key files             none "
               "(--without-keys)")
    checkpoint = ledger["checkpoint"]
    click.echo(f"audit log             {ledger['tree_size']} entries ({ledger['pending']} pending)"
               + (f"; latest checkpoint size {checkpoint['size']}, root {checkpoint['root']}" if checkpoint
                  else "; no checkpoint yet"))
    click.echo(f"manifest              {dest / backups.MANIFEST} ({len(m['files'])} files with SHA-256)")
    if with_keys:
        click.echo("WARNING: this backup holds the master key: anyone who has it can read every document. "
                   "Keep it encrypted and apart, or back up with --without-keys and keep the keys folder "
                   "offline, elsewhere.", err=True)
    else:
        click.echo(f"WARNING: this backup holds no key: it cannot be read without the key files of "
                   f"{settings.keys_path} (master key ids {', '.join(m['master_key_ids']) or 'none yet'}). "
                   "Keep a copy of that folder elsewhere; restore with --keys KEYDIR.", err=True)
    reason = _record(settings, "backup", {"dest": str(dest), "files": str(len(m["files"])),
                                          "with_keys": str(with_keys).lower(),
                                          "tree_size": str(ledger["tree_size"])})
    if reason:
        click.echo(f"WARNING: the backup could not be recorded in the audit log: {reason}", err=True)
    if report.problems:
        for problem in report.problems[:20]:
            click.echo(f"PROBLEM {problem}", err=True)
        raise click.ClickException(f"the backup is written but incomplete: {len(report.problems)} "
                                   f"problem(s), listed in its {backups.MANIFEST}")


@click.command("restore")
@click.argument("src", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--data", type=click.Path(path_type=Path), required=True,
              help="the new (or empty) data folder to restore into")
@click.option("--keys", "keys", type=click.Path(path_type=Path), default=None,
              help="folder of the key files, for a backup made --without-keys")
def restore_command(src: Path, data: Path, keys: Path | None) -> None:
    """Restore the backup in SRC into a new or empty data folder: every file checked against the
    manifest, the keys put back, the schema upgraded if the backup is older."""
    from carnet import backup as backups
    from carnet.cli.main import _settings

    settings = _settings(data)
    try:
        report = backups.restore(settings, src, keys_from=keys, progress=_progress)
    except CarnetError as exc:
        raise click.ClickException(exc.message) from None
    m = report.manifest
    ledger = m.get("ledger") or {}
    click.echo(f"restored from         {src}  (backup of {m['created_at']}, {report.seconds:.2f} s)")
    click.echo(f"into                  {settings.data_dir}")
    click.echo(f"files                 {report.files} checked and copied ({_size(report.bytes)})"
               + (f", keys from {keys}" if keys else ""))
    schema = (f"revision {report.revision_after}" if report.revision_before == report.revision_after
              else f"upgraded from {report.revision_before} to {report.revision_after}")
    click.echo(f"database              {schema}")
    click.echo(f"audit log             {report.tree_size} entries, as at the backup")
    origin = ledger.get("origin")
    if origin and origin != report.origin_now:
        click.echo(f"WARNING: the log is named {origin!r} but these settings would name it "
                   f"{report.origin_now!r}: set CARNET_LEDGER_ORIGIN={origin} (or the same CARNET_BASE_URL) "
                   "before serving, or `carnet verify` fails", err=True)
    reason = _record(settings, "restore", {"from": str(src), "backup_created_at": str(m["created_at"]),
                                           "tree_size": str(report.tree_size)})
    if reason:
        click.echo(f"WARNING: the restore could not be recorded in the audit log: {reason}", err=True)
    click.echo("next steps:")
    click.echo(f"  carnet verify --data {settings.data_dir}        check the log (signatures, every entry)")
    click.echo(f"  carnet keys status --data {settings.data_dir}   every data key has its master key")
    click.echo(f"  carnet serve --data {settings.data_dir}         serve it (stop the old server first: "
               "two servers must never sign the same log)")
    click.echo(f"  carnet blobs sweep --data {settings.data_dir}   later: content stored after the snapshot "
               "is unreferenced here")
