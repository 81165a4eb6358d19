"""A slice store on a local file system, with an embedded SQLite index.

On-disk layout (format 1)
-------------------------
::

    <data_dir>/index.sqlite3                        the index (SQLite, WAL, synchronous=FULL)
    <data_dir>/objects/<ab>/<object_id>.slice       this node's slice: its block of every
                                                    segment, in segment order, nothing else
    <data_dir>/objects/<ab>/.<object_id>.<nonce>.tmp   a deposit in progress

``<ab>`` is the first two hex digits of the object id: 256 fan-out directories keep every
directory small.  The leaves, the FV and the statement live in the index row.

Commit order — a crash at any point leaves either no trace of the object or all of it:

1. append blocks to the temp file; 2. flush and fsync it; 3. rename it to ``<object_id>.slice``;
4. fsync the fan-out directory, so the rename is durable; 5. insert the index row and commit
   (WAL + synchronous=FULL: durable when ``COMMIT`` returns).

Reads (``get``, ``open_slice``, listings) go through a second, query-only connection with its
own lock: in WAL mode they never wait for a writer, so a point read costs tens of microseconds
whatever deposits are committing, and the node may run it on its event loop.

An object exists only once its row is committed.  ``fsck`` (run at every open) removes temp
files (crash before 3) and slice files with no row (crash between 3 and 5), and marks *damaged*
every row whose file is missing or has the wrong length.  Deletion runs the other way round: the
row goes first, then the file; a crash in between leaves an orphan file for ``fsck``.

Index schema (``meta.format`` = 1)::

    meta(key TEXT PRIMARY KEY, value TEXT)      format, vault, slice_index
    objects(object_id TEXT PRIMARY KEY, owner, name, version, statement BLOB, fv BLOB (n x 32),
            leaves BLOB (s x 32), slice_index, slice_bytes, segment_count, block_bytes,
            state 'committed' | 'damaged', damage TEXT, created_at TEXT RFC 3339)

Version history: format 1 (2026-11), first version.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any, Final, Self

from evault.errors import (
    BadRange,
    DepositCancelled,
    InsufficientStorage,
    ObjectDamaged,
    ObjectExists,
    ObjectMissing,
    StorageError,
    StoreMismatch,
)
from evault.protocol.node_api import is_object_id
from evault.store.base import FsckReport, ListPage, ObjectRecord

FORMAT: Final = "1"
INDEX_NAME: Final = "index.sqlite3"
OBJECTS_DIR: Final = "objects"
SLICE_SUFFIX: Final = ".slice"
TEMP_SUFFIX: Final = ".tmp"

#: errno values that mean "the disk is full" (EDQUOT: the user's quota is).
_FULL_ERRNOS: Final = frozenset({errno.ENOSPC, errno.EDQUOT})

#: Opens a new temporary slice file for writing; tests inject one that fails like a full disk.
TempOpener = Callable[[Path], IO[bytes]]

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects (
    object_id     TEXT PRIMARY KEY,
    owner         TEXT NOT NULL,
    name          TEXT NOT NULL,
    version       INTEGER NOT NULL,
    statement     BLOB NOT NULL,
    fv            BLOB NOT NULL,
    leaves        BLOB NOT NULL,
    slice_index   INTEGER NOT NULL,
    slice_bytes   INTEGER NOT NULL,
    segment_count INTEGER NOT NULL,
    block_bytes   INTEGER NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('committed', 'damaged')),
    damage        TEXT,
    created_at    TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS objects_by_document ON objects (owner, name, version);
"""

_COLUMNS: Final = (
    "object_id, owner, name, version, statement, fv, leaves, slice_index, slice_bytes, "
    "segment_count, block_bytes, state, damage, created_at"
)


def _default_open_temp(path: Path) -> IO[bytes]:
    # O_EXCL: a temp name is never reused; 0o600: slices are nobody else's business.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "wb")


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS:
        return True
    return isinstance(exc, sqlite3.OperationalError) and (
        getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL"
        or "database or disk is full" in str(exc)
    )


def _row_to_record(row: tuple[Any, ...]) -> ObjectRecord:
    return ObjectRecord(
        object_id=row[0],
        owner=row[1],
        name=row[2],
        version=row[3],
        statement=bytes(row[4]),
        fv=ObjectRecord.fv_from_bytes(bytes(row[5])),
        leaves=bytes(row[6]),
        slice_index=row[7],
        slice_bytes=row[8],
        segment_count=row[9],
        block_bytes=row[10],
        state=row[11],
        damage=row[12],
        created_at=row[13],
    )


class DiskSliceWriter:
    """A deposit in progress: a temp file in the object's fan-out directory."""

    def __init__(self, store: DiskSliceStore, object_id: str, temp_path: Path) -> None:
        self._store = store
        self.object_id = object_id
        self.temp_path = temp_path
        self._fh: IO[bytes] | None = None
        self._bytes = 0
        self._done = False
        self.cancelled = False
        try:
            self._fh = store._open_temp(temp_path)
        except OSError as exc:
            self._finish()
            if _is_full(exc):
                raise InsufficientStorage(f"object {object_id}", exc.strerror or "") from exc
            raise StorageError(f"cannot create {temp_path}: {exc.strerror}") from exc

    @property
    def bytes_written(self) -> int:
        return self._bytes

    def write(self, data: bytes | memoryview) -> None:
        if self._done or self._fh is None:
            raise ValueError("write: the writer is already committed or aborted")
        try:
            self._fh.write(data)
        except OSError as exc:
            self.abort()
            if _is_full(exc):
                raise InsufficientStorage(f"object {self.object_id}", exc.strerror or "") from exc
            raise StorageError(f"cannot write {self.temp_path}: {exc.strerror}") from exc
        self._bytes += len(data)

    def commit(self, record: ObjectRecord) -> None:
        """Make slice and row durable (see the module docstring for the order), or raise."""
        if self._done or self._fh is None:
            raise ValueError("commit: the writer is already committed or aborted")
        if record.object_id != self.object_id:
            raise ValueError(f"record: object id {record.object_id} is not {self.object_id}")
        if record.slice_bytes != self._bytes:
            raise ValueError(
                f"record: slice_bytes {record.slice_bytes} but {self._bytes} bytes were written"
            )
        if record.state != "committed":
            raise ValueError("record: state must be 'committed'")
        fh = self._fh
        try:
            fh.flush()
            if self._store.durable:
                os.fsync(fh.fileno())
            fh.close()
        except OSError as exc:
            self.abort()
            if _is_full(exc):
                raise InsufficientStorage(f"object {self.object_id}", exc.strerror or "") from exc
            raise StorageError(f"cannot flush {self.temp_path}: {exc.strerror}") from exc
        try:
            self._store._commit(self, record)
        finally:
            self._finish()

    def abort(self) -> None:
        """Discard the deposit; safe to call more than once."""
        if self._done:
            return
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
        with contextlib.suppress(FileNotFoundError):
            self.temp_path.unlink()
        self._finish()

    def _finish(self) -> None:
        self._done = True
        self._store._release(self)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


class DiskSliceReader:
    """An open slice file positioned at a segment; reads in bounded chunks."""

    def __init__(self, record: ObjectRecord, fh: IO[bytes], from_segment: int) -> None:
        self.record = record
        self._fh = fh
        self._pos = record.segment_offset(from_segment)
        self._end = record.slice_bytes
        fh.seek(self._pos)

    def read_chunk(self, chunk_bytes: int) -> bytes:
        """The next at most ``chunk_bytes`` bytes of blocks; ``b""`` at the end."""
        if chunk_bytes < 1:
            raise ValueError("chunk_bytes: must be >= 1")
        want = min(chunk_bytes, self._end - self._pos)
        if want <= 0:
            return b""
        data = self._fh.read(want)
        if len(data) != want:
            raise ObjectDamaged(self.record.object_id, "slice file shrank while it was read")
        self._pos += want
        return data

    def iter_blocks(self, chunk_bytes: int) -> Iterator[bytes]:
        while chunk := self.read_chunk(chunk_bytes):
            yield chunk

    def close(self) -> None:
        self._fh.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DiskSliceStore:
    """:class:`evault.store.base.SliceStore` on a directory; thread-safe.

    ``durable=False`` skips the fsyncs, for benchmarks that measure everything else; a node never
    runs with it.  ``open_temp`` is the seam tests use to make writes fail like a full disk.
    """

    def __init__(
        self,
        data_dir: str | Path,
        *,
        vault: str,
        slice_index: int,
        open_temp: TempOpener | None = None,
        durable: bool = True,
    ) -> None:
        if slice_index < 0:
            raise ValueError("slice_index: must be >= 0")
        self.data_dir = Path(data_dir)
        self.objects_dir = self.data_dir / OBJECTS_DIR
        self.slice_index = slice_index
        self.durable = durable
        self._open_temp: TempOpener = open_temp or _default_open_temp
        self._lock = threading.RLock()
        self._active: dict[str, DiskSliceWriter] = {}
        try:
            self.objects_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create data directory {self.data_dir}: {exc}") from exc
        self._db = self._open_index()
        self._check_meta(vault, slice_index)
        self.last_fsck = self.fsck()
        self._read_lock = threading.Lock()
        self._read_db = self._open_reader()

    # --- index -----------------------------------------------------------------------------

    def _open_index(self) -> sqlite3.Connection:
        path = self.data_dir / INDEX_NAME
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"index {path}: SQLite refused WAL mode (got {mode!r})")
            db.execute("PRAGMA synchronous=FULL" if self.durable else "PRAGMA synchronous=OFF")
            db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the index {path}: {exc}") from exc
        return db

    def _open_reader(self) -> sqlite3.Connection:
        """The connection of point reads and listings (see the module docstring)."""
        path = self.data_dir / INDEX_NAME
        try:
            db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
            db.execute("PRAGMA query_only=ON")
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the index {path}: {exc}") from exc
        return db

    def _check_meta(self, vault: str, slice_index: int) -> None:
        wanted = {"format": FORMAT, "vault": vault, "slice_index": str(slice_index)}
        with self._lock:
            stored = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
            if not stored:
                self._write_tx(
                    lambda db: db.executemany(
                        "INSERT INTO meta (key, value) VALUES (?, ?)", sorted(wanted.items())
                    )
                )
                return
        for key, value in wanted.items():
            if stored.get(key) != value:
                raise StoreMismatch(str(self.data_dir), key, stored.get(key), value)

    def _write_tx(self, work: Callable[[sqlite3.Connection], object]) -> None:
        """Run ``work`` in one IMMEDIATE transaction, commit; a full disk is InsufficientStorage."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    work(self._db)
                except BaseException:
                    # SQLite rolls back by itself on some errors (SQLITE_FULL among them).
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                if _is_full(exc):
                    raise InsufficientStorage("the index", str(exc)) from exc
                raise StorageError(f"index write failed: {exc}") from exc

    def _row(self, object_id: str) -> tuple[Any, ...] | None:
        """The row as the writer sees it (inside its transactions and checks)."""
        with self._lock:
            row: tuple[Any, ...] | None = self._db.execute(
                f"SELECT {_COLUMNS} FROM objects WHERE object_id = ?", (object_id,)
            ).fetchone()
        return row

    def _read(self, sql: str, params: tuple[Any, ...], *, one: bool) -> Any:
        """A query on the read connection: the last committed state, never waiting on a write."""
        with self._read_lock:
            try:
                cursor = self._read_db.execute(sql, params)
                return cursor.fetchone() if one else cursor.fetchall()
            except sqlite3.Error as exc:
                raise StorageError(f"index read failed: {exc}") from exc

    # --- paths -----------------------------------------------------------------------------

    def _fanout(self, object_id: str) -> Path:
        return self.objects_dir / object_id[:2]

    def slice_path(self, object_id: str) -> Path:
        return self._fanout(object_id) / (object_id + SLICE_SUFFIX)

    @staticmethod
    def _check_id(object_id: str) -> None:
        if not is_object_id(object_id):
            raise ValueError(f"object_id: {object_id!r} is not 64 lowercase hex digits")

    # --- writing ---------------------------------------------------------------------------

    def begin(self, object_id: str) -> DiskSliceWriter:
        self._check_id(object_id)
        with self._lock:
            if object_id in self._active:
                raise ObjectExists(object_id, in_progress=True)
            row = self._row(object_id)
            if row is not None and row[11] == "committed":
                raise ObjectExists(object_id)
            fanout = self._fanout(object_id)
            if not fanout.is_dir():
                try:
                    fanout.mkdir(exist_ok=True)
                    if self.durable:
                        _fsync_dir(self.objects_dir)
                except OSError as exc:
                    if _is_full(exc):
                        raise InsufficientStorage(f"object {object_id}", str(exc)) from exc
                    raise StorageError(f"cannot create {fanout}: {exc.strerror}") from exc
            temp = fanout / f".{object_id}.{secrets.token_hex(8)}{TEMP_SUFFIX}"
            writer = DiskSliceWriter(self, object_id, temp)
            self._active[object_id] = writer
            return writer

    def _release(self, writer: DiskSliceWriter) -> None:
        with self._lock:
            if self._active.get(writer.object_id) is writer:
                del self._active[writer.object_id]

    def _commit(self, writer: DiskSliceWriter, record: ObjectRecord) -> None:
        final = self.slice_path(record.object_id)
        with self._lock:
            if writer.cancelled:
                writer.abort()
                raise DepositCancelled(record.object_id)
            row = self._row(record.object_id)
            if row is not None and row[11] == "committed":
                writer.abort()
                raise ObjectExists(record.object_id)
            try:
                os.replace(writer.temp_path, final)
                if self.durable:
                    _fsync_dir(final.parent)
            except OSError as exc:
                writer.abort()
                if _is_full(exc):
                    raise InsufficientStorage(f"object {record.object_id}", str(exc)) from exc
                raise StorageError(f"cannot rename into {final}: {exc.strerror}") from exc
            values = (
                record.object_id,
                record.owner,
                record.name,
                record.version,
                record.statement,
                record.fv_bytes(),
                record.leaves,
                record.slice_index,
                record.slice_bytes,
                record.segment_count,
                record.block_bytes,
                "committed",
                None,
                record.created_at,
            )
            try:
                # REPLACE only ever replaces a damaged row: a committed one was refused above.
                self._write_tx(
                    lambda db: db.execute(
                        f"INSERT OR REPLACE INTO objects ({_COLUMNS}) VALUES "
                        "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        values,
                    )
                )
            except StorageError:
                # The row is not there, so the renamed file is an orphan: remove it now rather
                # than wait for the next fsck.
                with contextlib.suppress(OSError):
                    final.unlink()
                    if self.durable:
                        _fsync_dir(final.parent)
                raise

    # --- reading ---------------------------------------------------------------------------

    def get(self, object_id: str) -> ObjectRecord:
        """The record of a committed object; ObjectMissing / ObjectDamaged otherwise."""
        self._check_id(object_id)
        row = self._read(
            f"SELECT {_COLUMNS} FROM objects WHERE object_id = ?", (object_id,), one=True
        )
        if row is None:
            raise ObjectMissing(object_id)
        record = _row_to_record(row)
        if record.state == "damaged":
            raise ObjectDamaged(object_id, record.damage or "unknown damage")
        return record

    def has_committed(self, object_id: str) -> bool:
        self._check_id(object_id)
        row = self._read("SELECT state FROM objects WHERE object_id = ?", (object_id,), one=True)
        return row is not None and row[0] == "committed"

    def open_slice(self, object_id: str, from_segment: int = 0) -> DiskSliceReader:
        record = self.get(object_id)
        if not 0 <= from_segment <= record.segment_count:
            raise BadRange(from_segment, record.segment_count)
        path = self.slice_path(object_id)
        try:
            fh = path.open("rb")
        except FileNotFoundError:
            self.mark_damaged(object_id, "slice file is missing")
            raise ObjectDamaged(object_id, "slice file is missing") from None
        size = os.fstat(fh.fileno()).st_size
        if size != record.slice_bytes:
            fh.close()
            reason = f"slice file has {size} bytes, the index says {record.slice_bytes}"
            self.mark_damaged(object_id, reason)
            raise ObjectDamaged(object_id, reason)
        return DiskSliceReader(record, fh, from_segment)

    def list_objects(self, after: str | None, limit: int) -> ListPage:
        if limit < 1:
            raise ValueError("limit: must be >= 1")
        if after is not None:
            self._check_id(after)
        rows = self._read(
            "SELECT object_id, statement FROM objects WHERE state = 'committed' "
            "AND object_id > ? ORDER BY object_id LIMIT ?",
            (after or "", limit + 1),
            one=False,
        )
        page = tuple((oid, bytes(st)) for oid, st in rows[:limit])
        return ListPage(objects=page, next_after=page[-1][0] if len(rows) > limit else None)

    def count(self) -> int:
        (n,) = self._read("SELECT count(*) FROM objects WHERE state = 'committed'", (), one=True)
        return int(n)

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.data_dir).free

    # --- deleting and checking -------------------------------------------------------------

    def delete(self, object_id: str) -> bool:
        """Remove an object (committed or damaged); True if there was one.  Idempotent."""
        self._check_id(object_id)
        path = self.slice_path(object_id)
        with self._lock:
            active = self._active.get(object_id)
            if active is not None:
                active.cancelled = True
            existed = self._row(object_id) is not None
            if existed:
                self._write_tx(
                    lambda db: db.execute("DELETE FROM objects WHERE object_id = ?", (object_id,))
                )
            try:
                path.unlink()
                existed = True
                if self.durable:
                    _fsync_dir(path.parent)
            except FileNotFoundError:
                pass
            except OSError as exc:
                # The row is gone, so the object no longer exists; fsck will remove the file.
                raise StorageError(f"cannot remove {path}: {exc.strerror}") from exc
        return existed

    def mark_damaged(self, object_id: str, reason: str) -> None:
        self._write_tx(
            lambda db: db.execute(
                "UPDATE objects SET state = 'damaged', damage = ? WHERE object_id = ?",
                (reason, object_id),
            )
        )

    def fsck(self) -> FsckReport:
        """Remove leftovers of interrupted work and mark damaged objects; see module docstring."""
        temps: list[str] = []
        orphans: list[str] = []
        damaged: list[tuple[str, str]] = []
        with self._lock:
            rows = {
                oid: (state, size)
                for oid, state, size in self._db.execute(
                    "SELECT object_id, state, slice_bytes FROM objects"
                )
            }
            for fanout in sorted(self.objects_dir.iterdir()):
                if not fanout.is_dir():
                    continue
                touched = False
                for entry in sorted(fanout.iterdir()):
                    name = entry.name
                    if name.endswith(TEMP_SUFFIX):
                        oid = name[1:].split(".", 1)[0]
                        if oid in self._active:
                            continue
                        entry.unlink(missing_ok=True)
                        temps.append(name)
                        touched = True
                    elif name.endswith(SLICE_SUFFIX):
                        oid = name[: -len(SLICE_SUFFIX)]
                        if oid not in rows and oid not in self._active:
                            entry.unlink(missing_ok=True)
                            orphans.append(name)
                            touched = True
                if touched and self.durable:
                    _fsync_dir(fanout)
            for oid, (state, size) in sorted(rows.items()):
                if state != "committed":
                    continue
                try:
                    actual = self.slice_path(oid).stat().st_size
                except FileNotFoundError:
                    reason = "slice file is missing"
                else:
                    if actual == size:
                        continue
                    reason = f"slice file has {actual} bytes, the index says {size}"
                self.mark_damaged(oid, reason)
                damaged.append((oid, reason))
        return FsckReport(
            temp_files_removed=tuple(temps),
            orphan_files_removed=tuple(orphans),
            damaged=tuple(damaged),
            checked=len(rows),
        )

    def close(self) -> None:
        with self._lock:
            for writer in list(self._active.values()):
                writer.abort()
            self._db.close()
        with self._read_lock:
            self._read_db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
