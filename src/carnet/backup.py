"""Backups of the embedded mode: ``carnet backup`` and ``carnet restore`` (docs/backup.md).

A backup is a folder::

    MANIFEST.json                 written last: format, time, the log's size and root, every file's
                                  size and SHA-256 (a folder without it is an unfinished backup)
    carnet.db                     the SQLite database, an online snapshot (one read transaction)
    blobs/<aa>/<bb>/<key>         the stored document content, as stored (encrypted)
    blobs/journals/...            the sealed daily journals
    keys/...                      the keys folder (master keys, ledger and token signing keys),
                                  unless made without keys
    insi/identities.json          the local INSi's reference file, when there is one

Consistency while a server writes: the database is copied first, through SQLite's online backup
API in a single step, so the copy is one snapshot (in WAL mode the server's writers go on
meanwhile). Blobs are written under their content's hash and never change; a document's content is
stored before the row that references it commits. So every blob the snapshot references already
exists when the blob folder is copied after it; blobs stored later are orphans in the backup, which
``carnet blobs sweep`` removes after a restore. Key files are copied last: a master key is never
deleted while a data key still needs it (``carnet keys retire`` refuses), so the copied keys cover
the snapshot's data keys; the backup checks both and records any gap as a problem.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import unquote, urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from carnet import __version__
from carnet.config import Settings
from carnet.errors import CarnetError

FORMAT = "carnet-backup/1"
MANIFEST = "MANIFEST.json"
DATABASE = "carnet.db"
BLOBS = "blobs"
KEYS = "keys"
INSI = "insi/identities.json"
STAGING = ".staging"
LEDGER_KEY = "ledger-ed25519.pem"  # carnet.ledger.keys.KEY_FILE
DOCS = "docs/backup.md"
CHUNK = 1024 * 1024
_MASTER = re.compile(r"master(-[0-9a-f]{16})?\.key")
_TOP = {DATABASE, BLOBS, KEYS, "insi"}


class BackupRefused(CarnetError):
    """A backup or restore that cannot (or must not) be done; nothing was written."""

    code = "processing"


# -- where things are ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """The files of an embedded installation, as its settings place them."""

    database: Path
    blobs: Path
    keys: Path
    ledger_key: Path
    insi: Path | None


def layout(settings: Settings) -> Layout:
    """Where the settings put the database, the blob folder and the keys; refused (naming the
    documented procedure) for PostgreSQL or an S3 blob store."""
    url = make_url(settings.sqlalchemy_url)
    if url.get_backend_name() != "sqlite":
        raise BackupRefused(
            f"the database is {url.get_backend_name()}: `carnet backup` and `carnet restore` are for the "
            f"embedded mode (SQLite); back up PostgreSQL as {DOCS} describes (pg_dump or pg_basebackup "
            "with WAL archiving, the blob store and the keys folder)")
    if not url.database or url.database == ":memory:":
        raise BackupRefused("the database is in memory: there is nothing on disk to back up")
    if settings.blob_url:
        parts = urlsplit(settings.blob_url)
        if parts.scheme not in ("", "file"):
            raise BackupRefused(
                f"document content is stored at {parts.scheme}:// (CARNET_BLOB_URL): this command copies a "
                f"local blob folder only; protect the bucket as {DOCS} describes (versioning)")
        blobs = Path(unquote(parts.path) if parts.scheme else settings.blob_url)
    else:
        blobs = settings.data_dir / BLOBS
    insi = settings.insi_spec
    return Layout(
        database=Path(url.database), blobs=blobs, keys=settings.keys_path,
        ledger_key=settings.ledger_key_file or settings.keys_path / LEDGER_KEY,
        insi=Path(insi.removeprefix("local:")) if insi.startswith("local:") else None)


# -- files -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    path: str  # relative to the backup folder, with '/'
    size: int
    sha256: str


class _NoProgress:
    def update(self, n: int) -> None:
        pass


@contextmanager
def _no_progress(total: int, label: str) -> Iterator[_NoProgress]:
    yield _NoProgress()


Progress = Callable[[int, str], AbstractContextManager[Any]]
"""``progress(total_bytes, label)``: a context manager whose value has ``update(n_bytes)``
(``click.progressbar`` is one)."""


def _mkdirs(folder: Path, created: list[Path]) -> None:
    """Create ``folder`` and its missing parents (mode 0700), remembering the topmost one created."""
    missing: list[Path] = []
    here = folder
    while not here.exists():
        missing.append(here)
        here = here.parent
    for path in reversed(missing):
        path.mkdir(mode=0o700)
    if missing:
        created.append(missing[-1])


def _copy(src: Path, dst: Path, created: list[Path], progress: Any) -> tuple[int, str]:
    """Copy ``src`` to a new file ``dst`` (mode 0600, never overwriting, mtime kept), hashing what is
    read: (size, SHA-256 hex)."""
    _mkdirs(dst.parent, created)
    digest = hashlib.sha256()
    size = 0
    with open(src, "rb") as inp:
        st = os.fstat(inp.fileno())
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        created.append(dst)
        with os.fdopen(fd, "wb") as out:
            while chunk := inp.read(CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
                progress.update(len(chunk))
    os.utime(dst, ns=(st.st_atime_ns, st.st_mtime_ns))
    return size, digest.hexdigest()


def _hash(path: Path, progress: Any) -> tuple[int, str]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as inp:
        while chunk := inp.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            progress.update(len(chunk))
    return size, digest.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _blob_files(root: Path) -> list[tuple[str, Path, int]]:
    """(path relative to the blob folder, file, size) of every stored file, staging area excluded."""
    found: list[tuple[str, Path, int]] = []
    if not root.is_dir():
        return found
    for folder, dirs, files in os.walk(root):
        here = Path(folder)
        if here == root:
            dirs[:] = [d for d in dirs if d != STAGING]
        dirs.sort()
        for name in sorted(files):
            path = here / name
            try:
                st = path.lstat()
            except FileNotFoundError:
                continue
            if path.is_file() and not path.is_symlink():
                found.append((path.relative_to(root).as_posix(), path, st.st_size))
    return found


def _key_files(folder: Path) -> list[Path]:
    """The files of a keys folder (temporary files of an atomic creation, named '.…', excluded)."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))


def _master_key_ids(files: list[Path]) -> set[str]:
    from carnet.crypto.keyfiles import read_key_file

    return {read_key_file(p).id for p in files if _MASTER.fullmatch(p.name)}


def _verifier_key(pem: Path, origin: str) -> str:
    from carnet.ledger.note import NoteSigner

    key = serialization.load_pem_private_key(pem.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise BackupRefused(f"the ledger key {pem.name} is not an Ed25519 private key")
    return NoteSigner(origin, key).verifier_key()


def _rollback(created: list[Path]) -> None:
    for path in reversed(created):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _is_empty(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


# -- backup ----------------------------------------------------------------------------------------
@dataclass
class BackupReport:
    dest: Path
    manifest: dict[str, Any]
    seconds: float
    database_bytes: int = 0
    blob_files: int = 0
    blob_bytes: int = 0
    key_files: int = 0
    vanished: int = 0  # blobs listed but deleted (orphans swept) before they could be copied
    problems: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(int(f["size"]) for f in self.manifest["files"])


def _snapshot(source: Path, target: Path) -> None:
    """Copy the live database through SQLite's online backup API, in one step (one read transaction:
    one consistent snapshot; the server's WAL writers are not held up), into a self-contained file."""
    src = sqlite3.connect(str(source), timeout=30)
    try:
        src.execute("PRAGMA busy_timeout=30000")
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        dst = sqlite3.connect(str(target))
        try:
            src.backup(dst, pages=-1)
            dst.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal beside it
            check = dst.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise BackupRefused(f"the database copy does not check ({check}): the source may be damaged")
        finally:
            dst.close()
    finally:
        src.close()


def _snapshot_facts(db: Path) -> dict[str, Any]:
    """What the snapshot holds: schema revision, the log's size and latest checkpoint, the blobs it
    references and the master keys its data keys need. A table an older schema lacks counts as empty
    (the restore upgrades the schema)."""
    from carnet.db.tables import audit_journals, audit_pending, data_keys, document_contents
    from carnet.ledger.store import latest_checkpoint, tree_size

    engine = create_engine(f"sqlite:///{db.as_posix()}")
    try:
        with engine.connect() as conn:
            has = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type = 'table'")}
            revision = (conn.exec_driver_sql("SELECT version_num FROM alembic_version").scalar()
                        if "alembic_version" in has else None)
            ledger = {"ledger_nodes", "ledger_checkpoints", "audit_pending"} <= has
            size = tree_size(conn) if ledger else 0
            checkpoint = latest_checkpoint(conn) if ledger else None
            pending = conn.execute(select(func.count()).select_from(audit_pending)).scalar() if ledger else 0
            content: set[str] = set()
            documents = 0
            if "document_contents" in has:
                content = {r[0] for r in conn.execute(select(document_contents.c.blob_key).distinct())}
                documents = conn.execute(select(func.count()).select_from(document_contents)).scalar() or 0
            journals = ({r[0] for r in conn.execute(select(audit_journals.c.blob_key))}
                        if "audit_journals" in has else set())
            masters = (sorted(r[0] for r in conn.execute(select(data_keys.c.master_key_id).distinct()))
                       if "data_keys" in has else [])
    except DBAPIError as exc:
        raise BackupRefused(f"the database copy cannot be read as a Carnet database "
                            f"({str(exc.orig).splitlines()[0]})") from None
    finally:
        engine.dispose()
    if revision is None:
        raise BackupRefused("the database has no schema revision: it is not a Carnet database (or was never "
                            "migrated)")
    return {"revision": revision, "tree_size": size, "pending": int(pending or 0),
            "documents": int(documents), "checkpoint": None if checkpoint is None else {
                "size": checkpoint.size, "root": base64.b64encode(checkpoint.root).decode(),
                "created_at": checkpoint.created_at},
            "content": content, "journals": journals, "master_key_ids": masters}


def backup(settings: Settings, dest: Path, *, with_keys: bool = True,
           progress: Progress = _no_progress) -> BackupReport:
    """Back up an embedded installation, online, into ``dest`` (a new or empty folder).

    Gaps found (content the snapshot references missing from the blob folder, a data key whose master
    key file is missing) do not stop the backup: they are listed in the report and the manifest."""
    started = time.monotonic()
    where = layout(settings)
    if not where.database.is_file():
        raise BackupRefused(f"no database at {where.database}: nothing to back up")
    if (dest / MANIFEST).exists():
        raise BackupRefused(f"{dest} already holds a backup ({MANIFEST}): give a new or empty folder")
    if not _is_empty(dest):
        raise BackupRefused(f"{dest} is not empty: give a new or empty folder")
    for inner, what in ((where.blobs, "blob"), (where.keys, "keys"), (settings.data_dir, "data")):
        if _inside(dest, inner):
            raise BackupRefused(f"{dest} is inside the {what} folder {inner}: put the backup elsewhere (a "
                                "backup kept in the folder it protects is lost with it)")
    created: list[Path] = []
    try:
        return _backup(settings, where, dest, with_keys, progress, created, started)
    except BaseException:
        _rollback(created)
        raise


def _take_in_spool(settings: Settings) -> None:
    from carnet.audit.sink import take_in
    from carnet.db.engine import make_engine

    engine = make_engine(settings)
    try:
        take_in(settings, engine)
    finally:
        engine.dispose()


def _backup(settings: Settings, where: Layout, dest: Path, with_keys: bool, progress: Progress,
            created: list[Path], started: float) -> BackupReport:
    from carnet.blobs.local import LocalObjects
    from carnet.ledger.keys import origin_of

    origin = origin_of(settings)
    _mkdirs(dest, created)
    files: list[Entry] = []
    report = BackupReport(dest=dest, manifest={}, seconds=0.0)

    # 0. the reads' audit rows still in the server's spool go in first (carnet.audit.spool): the
    # snapshot then holds every trace of what was answered before the backup began
    _take_in_spool(settings)

    # 1. the database: one snapshot
    created.append(dest / DATABASE)
    with progress(where.database.stat().st_size, "copying the database") as bar:
        _snapshot(where.database, dest / DATABASE)
        size, digest = _hash(dest / DATABASE, bar)
    files.append(Entry(DATABASE, size, digest))
    report.database_bytes = size
    facts = _snapshot_facts(dest / DATABASE)

    # 2. the blobs, listed after the snapshot: every blob it references exists by now
    listed = _blob_files(where.blobs)
    copied: set[str] = set()
    with progress(sum(s for _, _, s in listed), "copying document content") as bar:
        for rel, path, _ in listed:
            try:
                size, digest = _copy(path, dest / BLOBS / rel, created, bar)
            except FileNotFoundError:
                if not (dest / BLOBS / rel).exists():
                    report.vanished += 1
                    continue
                raise
            files.append(Entry(f"{BLOBS}/{rel}", size, digest))
            copied.add(rel)
            report.blob_files += 1
            report.blob_bytes += size
    referenced: set[str] = set()
    for kind, keys, root in (("the content of a document", facts["content"], LocalObjects(where.blobs)),
                             ("a sealed journal", facts["journals"], LocalObjects(where.blobs / "journals"))):
        for key in sorted(keys):
            rel = root.path(key).relative_to(where.blobs).as_posix()
            referenced.add(rel)
            if rel not in copied:
                report.problems.append(f"blob {key} ({kind}) is missing from the blob folder {where.blobs}")

    # 3. the keys
    key_sources = [p for p in _key_files(where.keys)
                   if not (p.name == LEDGER_KEY and p.resolve() != where.ledger_key.resolve())]
    if where.ledger_key.is_file() and where.ledger_key.parent.resolve() != where.keys.resolve():
        key_sources.append(where.ledger_key)  # configured outside the keys folder
    held = _master_key_ids(key_sources)
    for key_id in facts["master_key_ids"]:
        if key_id not in held:
            report.problems.append(f"master key {key_id} wraps data keys but has no key file in {where.keys}")
    verifier = _verifier_key(where.ledger_key, origin) if where.ledger_key.is_file() else None
    if with_keys:
        for path in key_sources:
            name = LEDGER_KEY if path == where.ledger_key else path.name
            size, digest = _copy(path, dest / KEYS / name, created, _NoProgress())
            files.append(Entry(f"{KEYS}/{name}", size, digest))
            report.key_files += 1

    # 4. the local INSi's reference file
    if where.insi is not None and where.insi.is_file():
        size, digest = _copy(where.insi, dest / INSI, created, _NoProgress())
        files.append(Entry(INSI, size, digest))

    # 5. the manifest, last, once everything else is on disk
    os.sync()
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "carnet_version": __version__,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        "database_revision": facts["revision"],
        "with_keys": with_keys,
        "source": {"data_dir": str(settings.data_dir), "database": str(where.database),
                   "blobs": str(where.blobs), "keys": str(where.keys)},
        "ledger": {"origin": origin, "verifier_key": verifier, "tree_size": facts["tree_size"],
                   "pending": facts["pending"], "checkpoint": facts["checkpoint"]},
        "master_key_ids": facts["master_key_ids"],
        "counts": {"documents": facts["documents"], "contents": len(facts["content"]),
                   "journals": len(facts["journals"]), "blob_files": report.blob_files,
                   "unreferenced_blob_files": len(copied - referenced),
                   "vanished_blob_files": report.vanished},
        "problems": report.problems,
        "files": [{"path": f.path, "size": f.size, "sha256": f.sha256} for f in files],
    }
    part = dest / (MANIFEST + ".part")
    created.append(part)
    fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(manifest, out, indent=1, ensure_ascii=False)
        out.write("\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(part, dest / MANIFEST)
    _fsync_dir(dest)
    report.manifest = manifest
    report.seconds = time.monotonic() - started
    return report


# -- restore ---------------------------------------------------------------------------------------
@dataclass
class RestoreReport:
    manifest: dict[str, Any]
    seconds: float
    files: int
    bytes: int
    revision_before: str | None
    revision_after: str | None
    tree_size: int
    keys_from: Path | None
    origin_now: str


def read_manifest(src: Path) -> dict[str, Any]:
    path = src / MANIFEST
    if not path.is_file():
        raise BackupRefused(f"{src} holds no {MANIFEST}: not a Carnet backup, or an unfinished one "
                            "(a backup writes its manifest last)")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BackupRefused(f"{MANIFEST} of {src} is damaged (not JSON: {exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupRefused(f"{MANIFEST} of {src} is not a {FORMAT} manifest")
    if not isinstance(manifest.get("files"), list) or not all(
            isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("size"), int)
            and isinstance(f.get("sha256"), str) for f in manifest["files"]):
        raise BackupRefused(f"{MANIFEST} of {src} is damaged (its file list)")
    for f in manifest["files"]:
        rel = PurePosixPath(f["path"])
        if rel.is_absolute() or ".." in rel.parts or not rel.parts or rel.parts[0] not in _TOP:
            raise BackupRefused(f"{MANIFEST} of {src} names a file outside a backup's layout: {rel}")
    if not any(f["path"] == DATABASE for f in manifest["files"]):
        raise BackupRefused(f"{MANIFEST} of {src} lists no {DATABASE}")
    return manifest


def _targets(where: Layout, rel: str) -> Path | None:
    parts = PurePosixPath(rel).parts
    if rel == DATABASE:
        return where.database
    if parts[0] == BLOBS:
        return where.blobs.joinpath(*parts[1:])
    if parts[0] == KEYS:
        return where.ledger_key if parts[1:] == (LEDGER_KEY,) else where.keys.joinpath(*parts[1:])
    if rel == INSI:
        return where.insi
    return None


def restore(settings: Settings, src: Path, *, keys_from: Path | None = None,
            progress: Progress = _no_progress) -> RestoreReport:
    """Restore the backup in ``src`` into the (new or empty) data folder of ``settings``: check every
    file against the manifest while copying it (a damaged backup is refused naming its files, and
    nothing is left behind), put the keys back (from the backup, or ``keys_from`` for a backup made
    without them), then bring the schema to the newest revision."""
    from carnet.db.engine import make_engine
    from carnet.db.migrate import current_revision, upgrade
    from carnet.ledger.keys import origin_of
    from carnet.ledger.store import tree_size

    started = time.monotonic()
    manifest = read_manifest(src)
    where = layout(settings)
    with_keys = bool(manifest.get("with_keys"))
    if with_keys and keys_from is not None:
        raise BackupRefused("this backup holds its keys: --keys is for a backup made --without-keys")
    if not with_keys and keys_from is None:
        raise BackupRefused("this backup was made --without-keys: give the folder of its key files with "
                            "--keys KEYDIR (the keys folder kept apart from the backup)")
    if not _is_empty(settings.data_dir):
        raise BackupRefused(f"the data folder {settings.data_dir} is not empty: restore only into a new or "
                            "empty folder")
    for path, what in ((where.database, "database"), (where.blobs, "blob folder"),
                       (where.keys, "keys folder"), (where.ledger_key, "ledger key"),
                       (where.insi, "INSi reference file")):
        if path is not None and not _is_empty(path):
            raise BackupRefused(f"the {what} {path} already exists: restore only into a new installation")

    files = [f for f in manifest["files"] if with_keys or PurePosixPath(f["path"]).parts[0] != KEYS]
    plan: list[tuple[Path, Path, dict[str, Any] | None]] = []  # (source, target, manifest entry)
    for f in files:
        target = _targets(where, f["path"])
        if target is not None:
            plan.append((src / f["path"], target, f))
    ledger = manifest.get("ledger") or {}
    if keys_from is not None:
        _check_key_folder(keys_from, manifest)
        for path in _key_files(keys_from):
            plan.append((path, where.ledger_key if path.name == LEDGER_KEY else where.keys / path.name, None))
    else:
        _check_backup_keys(src, manifest)

    created: list[Path] = []
    problems: list[str] = []
    total = 0
    try:
        with progress(sum(int(f["size"]) for f in files), "restoring") as bar:
            for source, target, entry in plan:
                rel = entry["path"] if entry is not None else str(source)
                if not source.is_file():
                    problems.append(f"{rel} is missing")
                    continue
                if problems:  # already refused: only check the rest, to name every damaged file
                    size, digest = _hash(source, bar)
                else:
                    size, digest = _copy(source, target, created, bar)
                    total += size
                if entry is not None and (size != int(entry["size"]) or digest != entry["sha256"]):
                    problems.append(_differs(entry, size))
        if problems:
            raise _damaged(src, problems)
        os.sync()
        created.extend(where.database.with_name(where.database.name + suffix)
                       for suffix in ("-wal", "-shm", ".writelock", ".writelock-turn"))
        engine = make_engine(settings)
        try:
            before = current_revision(engine)
            upgrade(engine)
            after = current_revision(engine)
            with engine.connect() as conn:
                size_now = tree_size(conn)
        finally:
            engine.dispose()
        if size_now != ledger.get("tree_size", size_now):
            raise BackupRefused(f"the restored log holds {size_now} entries, the manifest says "
                                f"{ledger.get('tree_size')}")
    except BaseException:
        _rollback(created)
        raise
    return RestoreReport(manifest=manifest, seconds=time.monotonic() - started, files=len(plan), bytes=total,
                         revision_before=before, revision_after=after, tree_size=size_now,
                         keys_from=keys_from, origin_now=origin_of(settings))


def _differs(entry: dict[str, Any], size: int) -> str:
    what = "size" if size != int(entry["size"]) else "SHA-256"
    return f"{entry['path']} differs from the manifest ({what})"


def _damaged(src: Path, problems: list[str]) -> BackupRefused:
    shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
    return BackupRefused(f"the backup in {src} is damaged, nothing was restored: {shown}")


def _check_keys(files: list[Path], manifest: dict[str, Any], where: str) -> None:
    """The key files cover the snapshot's data keys, and hold the log's signing key."""
    try:
        held = _master_key_ids(files)
    except CarnetError as exc:
        raise BackupRefused(f"{where}: {exc.message}") from None
    missing = [k for k in manifest.get("master_key_ids", []) if k not in held]
    if missing:
        raise BackupRefused(f"{where} lacks master key(s) {', '.join(missing)}, which wrap the backup's data "
                            "keys: without them that content cannot be read")
    ledger = manifest.get("ledger") or {}
    expected = ledger.get("verifier_key")
    if expected:
        pem = next((p for p in files if p.name == LEDGER_KEY), None)
        if pem is None:
            raise BackupRefused(f"{where} has no {LEDGER_KEY}: the log's checkpoints could not be checked "
                                "nor signed with the same key")
        if _verifier_key(pem, ledger["origin"]) != expected:
            raise BackupRefused(f"{where}: {LEDGER_KEY} is not the key that signed this backup's log")


def _check_key_folder(keys_from: Path, manifest: dict[str, Any]) -> None:
    if not keys_from.is_dir():
        raise BackupRefused(f"--keys {keys_from} is not a folder")
    _check_keys(_key_files(keys_from), manifest, f"the keys folder {keys_from}")


def _check_backup_keys(src: Path, manifest: dict[str, Any]) -> None:
    """The backup's key files are intact (checked first: a damaged key file is named as such) and
    cover its data keys."""
    entries = [f for f in manifest["files"] if PurePosixPath(f["path"]).parts[0] == KEYS]
    for f in entries:
        path = src / f["path"]
        if not path.is_file():
            raise _damaged(src, [f"{f['path']} is missing"])
        size, digest = _hash(path, _NoProgress())
        if size != int(f["size"]) or digest != f["sha256"]:
            raise _damaged(src, [_differs(f, size)])
    _check_keys([src / f["path"] for f in entries], manifest, f"the keys of the backup {src}")
