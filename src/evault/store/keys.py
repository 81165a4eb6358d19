"""A node's store of its shares of clients' unwrap keys, and its replay cache (DESIGN §7).

On-disk layout (format 1)
-------------------------
One SQLite file next to the slice index, ``<data_dir>/unwrap-keys.sqlite3`` (WAL,
synchronous=FULL: a row is durable when ``COMMIT`` returns)::

    meta(key TEXT PRIMARY KEY, value TEXT)       format, vault, node
    unwrap_keys(owner TEXT, key_id BLOB (32),    one row per (owner, unwrap key Y)
                owner_id TEXT (64 hex),          evault.protocol.node_api.owner_id
                identity BLOB (32),              the owner's Ed25519 identity public key
                sealed BLOB,                     the share exactly as it arrived: sealed to
                                                 this node's X25519 key (see below)
                certificate BLOB,                the key's signed public certificate
                created_at TEXT RFC 3339)
    seen_requests(request_id BLOB PRIMARY KEY,   unwrap request ids already served, kept
                  expires_at REAL unix seconds)  until the request could no longer be fresh

Why the share is kept *sealed*: the node opens it with its sealing key whenever it needs it
(and caches the opened share in memory), so the file holds nothing a thief of the data
directory alone can use — the same protection as the node's signing share, whose file the
sealing key sits next to.  The checks the node made when the share arrived (Feldman, the
identity signature, vault, owner and node index) are repeated on every open.

Rules kept here (atomically, in one IMMEDIATE transaction):

* all keys of one owner carry the same identity key: a key under another identity is refused
  (``KeyConflict``) — the first registration of an owner is trust on first use;
* a key already stored is never replaced (``put`` reports ``created=False``): with the same
  commitments the share is necessarily the same (Feldman), so nothing is lost;
* at most ``max_keys_per_owner`` keys per owner.

This module does no cryptography: the node service (``evault.node.unwrap``) checks
everything before it calls :meth:`KeyShareStore.put`.

Version history: format 1 (issue 6), first version.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TypeVar

from evault.errors import InsufficientStorage, KeyConflict, StorageError, StoreMismatch

FORMAT: Final = "1"
KEYS_DB_NAME: Final = "unwrap-keys.sqlite3"

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS unwrap_keys (
    owner       TEXT NOT NULL,
    key_id      BLOB NOT NULL CHECK (length(key_id) = 32),
    owner_id    TEXT NOT NULL,
    identity    BLOB NOT NULL CHECK (length(identity) = 32),
    sealed      BLOB NOT NULL,
    certificate BLOB NOT NULL,
    created_at  TEXT NOT NULL,
    PRIMARY KEY (owner, key_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS unwrap_keys_by_owner_id ON unwrap_keys (owner_id);
CREATE TABLE IF NOT EXISTS seen_requests (
    request_id BLOB PRIMARY KEY,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_requests_by_expiry ON seen_requests (expires_at);
"""

T = TypeVar("T")


@dataclass(frozen=True)
class StoredKey:
    """One stored unwrap-key share (still sealed) with its certificate."""

    owner: str
    key_id: bytes
    identity: bytes
    sealed: bytes
    certificate: bytes
    created_at: str


class KeyShareStore:
    """The unwrap-key table and the replay cache of one node; thread-safe."""

    def __init__(
        self,
        data_dir: str | Path,
        *,
        vault: str,
        node: int,
        max_keys_per_owner: int = 32,
        durable: bool = True,
    ) -> None:
        if node < 1:
            raise ValueError("node: must be >= 1")
        if max_keys_per_owner < 1:
            raise ValueError("max_keys_per_owner: must be >= 1")
        self.path = Path(data_dir) / KEYS_DB_NAME
        self.max_keys_per_owner = max_keys_per_owner
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(
                self.path, isolation_level=None, check_same_thread=False, timeout=30
            )
            mode = self._db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StorageError(f"key store {self.path}: SQLite refused WAL mode ({mode!r})")
            self._db.execute("PRAGMA synchronous=FULL" if durable else "PRAGMA synchronous=OFF")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise StorageError(f"cannot open the key store {self.path}: {exc}") from exc
        self._check_meta({"format": FORMAT, "vault": vault, "node": str(node)})

    def _check_meta(self, wanted: dict[str, str]) -> None:
        stored = dict(self._read(lambda db: db.execute("SELECT key, value FROM meta").fetchall()))
        if not stored:
            self._write(
                lambda db: db.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)", sorted(wanted.items())
                )
            )
            return
        for key, value in wanted.items():
            if stored.get(key) != value:
                raise StoreMismatch(str(self.path), key, stored.get(key), value)

    # -- transactions ----------------------------------------------------------------------

    def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            try:
                return work(self._db)
            except sqlite3.Error as exc:
                raise StorageError(f"key store {self.path}: {exc}") from exc

    def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    result = work(self._db)
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
                return result
            except sqlite3.OperationalError as exc:
                if "full" in str(exc):
                    raise InsufficientStorage(f"key store {self.path}", str(exc)) from exc
                raise StorageError(f"key store {self.path}: {exc}") from exc
            except sqlite3.Error as exc:
                raise StorageError(f"key store {self.path}: {exc}") from exc

    # -- keys --------------------------------------------------------------------------------

    def put(self, key: StoredKey, *, owner_id: str) -> bool:
        """Store ``key``; True if it is new, False if that (owner, key id) was already there.

        Raises ``KeyConflict`` if the owner's keys carry another identity, or if the owner
        already has ``max_keys_per_owner`` keys.
        """

        def work(db: sqlite3.Connection) -> bool:
            rows = db.execute(
                "SELECT key_id, identity FROM unwrap_keys WHERE owner = ?", (key.owner,)
            ).fetchall()
            identities = {bytes(r[1]) for r in rows}
            if identities and identities != {key.identity}:
                raise KeyConflict(
                    key.owner,
                    "this node holds unwrap keys of that owner signed by another identity key "
                    "(only the identity that registered first may add keys)",
                )
            if any(bytes(r[0]) == key.key_id for r in rows):
                return False
            if len(rows) >= self.max_keys_per_owner:
                raise KeyConflict(
                    key.owner, f"the owner already has {len(rows)} unwrap keys at this node"
                )
            db.execute(
                "INSERT INTO unwrap_keys (owner, key_id, owner_id, identity, sealed, "
                "certificate, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key.owner,
                    key.key_id,
                    owner_id,
                    key.identity,
                    key.sealed,
                    key.certificate,
                    key.created_at,
                ),
            )
            return True

        return self._write(work)

    def get(self, owner: str, key_id: bytes) -> StoredKey | None:
        row = self._read(
            lambda db: db.execute(
                "SELECT owner, key_id, identity, sealed, certificate, created_at "
                "FROM unwrap_keys WHERE owner = ? AND key_id = ?",
                (owner, key_id),
            ).fetchone()
        )
        return None if row is None else _stored(row)

    def list_by_owner_id(self, owner_id: str) -> list[StoredKey]:
        """Every key of the owner named by ``owner_id``, oldest first."""
        rows = self._read(
            lambda db: db.execute(
                "SELECT owner, key_id, identity, sealed, certificate, created_at "
                "FROM unwrap_keys WHERE owner_id = ? ORDER BY created_at, key_id",
                (owner_id,),
            ).fetchall()
        )
        return [_stored(r) for r in rows]

    def count(self) -> int:
        return int(
            self._read(lambda db: db.execute("SELECT count(*) FROM unwrap_keys").fetchone())[0]
        )

    # -- replay cache --------------------------------------------------------------------------

    def seen_before(self, request_id: bytes, *, expires_at: float, now: float) -> bool:
        """True if ``request_id`` was recorded and has not expired; otherwise record it
        (until ``expires_at``) and return False.  Expired ids are purged on the way."""

        def work(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM seen_requests WHERE expires_at < ?", (now,))
            cursor = db.execute(
                "INSERT INTO seen_requests (request_id, expires_at) VALUES (?, ?) "
                "ON CONFLICT (request_id) DO NOTHING",
                (request_id, expires_at),
            )
            return cursor.rowcount == 0

        return self._write(work)

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _stored(row: Any) -> StoredKey:
    return StoredKey(
        owner=row[0],
        key_id=bytes(row[1]),
        identity=bytes(row[2]),
        sealed=bytes(row[3]),
        certificate=bytes(row[4]),
        created_at=row[5],
    )
