"""Change detection for backups: the "archive bit" (paper §2.3.2), decided purely.

DOS kept an archive bit per file, set by every write and cleared by the backup program; the paper's
sophisticated client uses "profiles and archive bits, like standard backup processes" to pick the
files to deposit.  Portable file systems have no such bit, so evault keeps, per document, the state
it last deposited -- size, mtime in nanoseconds, SHA-256 -- and compares it with the file now:

=================  ========================================  ==================================
decision           when                                      deposit?
=================  ========================================  ==================================
``new``            no state recorded for this document       yes
``unchanged``      size and mtime_ns equal (no hashing)      no
``touched``        size equal, mtime differs, same SHA-256   no (record the new mtime)
``modified``       size differs, or SHA-256 differs          yes
=================  ========================================  ==================================

(``touched`` is spelled ``touched-but-same-content`` in reports.)  Hashing is lazy: the caller
passes a zero-argument function, called at most once and only when size and mtime do not settle
the question, so an unchanged tree costs one ``stat`` per file.  A hash computed here is returned
so that the deposit does not read the file a second time.

Racily clean files.  A file written in the same clock tick as the moment its state was recorded
can be modified again without its mtime changing (file-system timestamps are coarse: 2 s on FAT,
a kernel tick on others).  Git calls such entries "racily clean" and rehashes them; so does this
module when the state carries ``recorded_ns`` and the file's mtime is within
``mtime_granularity_ns`` of it.

The state is recorded by the caller only **after** the vault's receipt for the deposit has been
verified: clearing the archive bit before the data is safe would lose a change if the deposit
failed.  The state store itself (SQLite, written by the CLI) is described by
:class:`ChangeStateStore`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from functools import partial
from typing import Protocol

__all__ = [
    "DEFAULT_MTIME_GRANULARITY_NS",
    "ChangeDecision",
    "ChangeKind",
    "ChangePlan",
    "ChangeStateStore",
    "FileStat",
    "FileState",
    "decide_change",
    "plan_changes",
]

# 2 s covers FAT's timestamp resolution, the coarsest a backup is likely to meet.
DEFAULT_MTIME_GRANULARITY_NS = 2_000_000_000


class ChangeKind(StrEnum):
    NEW = "new"
    UNCHANGED = "unchanged"
    TOUCHED = "touched-but-same-content"
    MODIFIED = "modified"


def _check_int(value: object, param: str, *, minimum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{param} must be an int, got {type(value).__name__}")
    if minimum is not None and value < minimum:
        raise ValueError(f"{param} must be >= {minimum}, got {value}")


def _check_sha256(value: object, param: str) -> None:
    if not isinstance(value, bytes) or len(value) != 32:
        got = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise ValueError(f"{param} must be a 32-byte SHA-256 digest, got {got}")


@dataclass(frozen=True)
class FileStat:
    """What ``stat`` says about a file now: size in bytes and mtime in nanoseconds."""

    size: int
    mtime_ns: int

    def __post_init__(self) -> None:
        _check_int(self.size, "size", minimum=0)
        _check_int(self.mtime_ns, "mtime_ns")


@dataclass(frozen=True)
class FileState:
    """What was true of a file when it was last deposited (or last found touched).

    ``recorded_ns`` is the wall-clock time (ns since the epoch) at which the state was taken, used
    to catch racily clean files; None turns that check off.
    """

    size: int
    mtime_ns: int
    sha256: bytes
    recorded_ns: int | None = None

    def __post_init__(self) -> None:
        _check_int(self.size, "size", minimum=0)
        _check_int(self.mtime_ns, "mtime_ns")
        _check_sha256(self.sha256, "sha256")
        if self.recorded_ns is not None:
            _check_int(self.recorded_ns, "recorded_ns")


@dataclass(frozen=True)
class ChangeDecision:
    """The verdict for one file.

    ``sha256`` is the current content hash if it was computed (None when size and mtime sufficed).
    ``new_state`` is what to record: after a verified deposit when :attr:`needs_deposit`;
    otherwise at once if :attr:`record_without_deposit` (a touched file gets its new mtime, a
    racily clean file its new ``recorded_ns`` so that it is not rehashed every time).
    """

    key: str
    kind: ChangeKind
    reason: str
    sha256: bytes | None
    new_state: FileState
    record_without_deposit: bool = False

    @property
    def needs_deposit(self) -> bool:
        return self.kind in (ChangeKind.NEW, ChangeKind.MODIFIED)


def decide_change(
    key: str,
    previous: FileState | None,
    current: FileStat,
    hash_file: Callable[[], bytes],
    *,
    recorded_ns: int | None = None,
    mtime_granularity_ns: int = DEFAULT_MTIME_GRANULARITY_NS,
) -> ChangeDecision:
    """Decide whether the file ``key`` (its document name) must be deposited again.

    ``hash_file`` returns the file's current SHA-256; it is called at most once.  ``recorded_ns``
    is stamped into ``new_state`` (pass the time the stat was taken).
    """
    _check_int(mtime_granularity_ns, "mtime_granularity_ns", minimum=0)
    if not isinstance(current, FileStat):
        raise TypeError(f"current must be a FileStat, got {type(current).__name__}")
    if previous is not None and not isinstance(previous, FileState):
        raise TypeError(f"previous must be a FileState or None, got {type(previous).__name__}")

    digest: bytes | None = None

    def hashed() -> bytes:
        nonlocal digest
        if digest is None:
            value = hash_file()
            _check_sha256(value, "hash_file()")
            digest = value
        return digest

    def decision(kind: ChangeKind, reason: str) -> ChangeDecision:
        if kind is ChangeKind.UNCHANGED and previous is not None and digest is None:
            return ChangeDecision(key, kind, reason, None, previous)
        state = FileState(current.size, current.mtime_ns, hashed(), recorded_ns)
        record = kind in (ChangeKind.UNCHANGED, ChangeKind.TOUCHED) and state != previous
        return ChangeDecision(key, kind, reason, digest, state, record)

    if previous is None:
        return decision(ChangeKind.NEW, "no state recorded: never deposited by this profile")

    if previous.size != current.size:
        return decision(
            ChangeKind.MODIFIED, f"size changed from {previous.size} to {current.size} bytes"
        )

    if previous.mtime_ns == current.mtime_ns:
        racy = (
            previous.recorded_ns is not None
            and current.mtime_ns >= previous.recorded_ns - mtime_granularity_ns
        )
        if not racy:
            return decision(ChangeKind.UNCHANGED, "size and mtime unchanged")
        if hashed() == previous.sha256:
            return decision(
                ChangeKind.UNCHANGED,
                "size and mtime unchanged; content rehashed (mtime too close to when the "
                "state was recorded to be trusted) and the same",
            )
        return decision(
            ChangeKind.MODIFIED,
            "content changed although size and mtime did not (modified in the same "
            "timestamp tick as the last backup)",
        )

    if hashed() == previous.sha256:
        return decision(ChangeKind.TOUCHED, "mtime changed but the content is the same")
    return decision(ChangeKind.MODIFIED, "content changed (SHA-256 differs)")


@dataclass(frozen=True)
class ChangePlan:
    """Decisions for the files present now, and the keys that have state but no file any more."""

    decisions: tuple[ChangeDecision, ...]
    vanished: tuple[str, ...]

    @property
    def to_deposit(self) -> tuple[ChangeDecision, ...]:
        return tuple(d for d in self.decisions if d.needs_deposit)

    def count(self, kind: ChangeKind) -> int:
        return sum(1 for d in self.decisions if d.kind is kind)


def plan_changes(
    current: Iterable[tuple[str, FileStat]],
    previous: Mapping[str, FileState],
    hash_file: Callable[[str], bytes],
    *,
    recorded_ns: int | None = None,
    mtime_granularity_ns: int = DEFAULT_MTIME_GRANULARITY_NS,
) -> ChangePlan:
    """:func:`decide_change` for every file, sorted by key.

    ``vanished`` lists keys with recorded state but no current file: their versions stay in the
    vault (a backup never deletes a document because its file went away); the caller may forget
    their state.
    """
    decisions: dict[str, ChangeDecision] = {}
    for key, stat in current:
        if key in decisions:
            raise ValueError(f"current: {key!r} is listed twice")
        decisions[key] = decide_change(
            key,
            previous.get(key),
            stat,
            partial(hash_file, key),
            recorded_ns=recorded_ns,
            mtime_granularity_ns=mtime_granularity_ns,
        )
    vanished = tuple(sorted(k for k in previous if k not in decisions))
    return ChangePlan(tuple(decisions[k] for k in sorted(decisions)), vanished)


class ChangeStateStore(Protocol):
    """What the archive-bit database must offer (the CLI implements it on SQLite).

    Keys are document names (``BackupProfile.document_name``), so one store can serve several
    profiles.  ``put`` must be durable when it returns and is called only after the vault's receipt
    for that content has been verified; a crash between deposit and ``put`` only means the file is
    deposited once more next time, never that a change is lost.
    """

    def get(self, key: str) -> FileState | None:
        """The recorded state of ``key``, or None if it has never been recorded."""
        ...

    def get_many(self, keys: Iterable[str]) -> Mapping[str, FileState]:
        """The recorded states of those ``keys`` that have one (one query for a whole batch)."""
        ...

    def keys_under(self, prefix: str) -> Iterable[str]:
        """Every recorded key that starts with ``prefix`` (to find a profile's vanished files)."""
        ...

    def put(self, key: str, state: FileState) -> None:
        """Record ``state`` for ``key``, replacing any previous one."""
        ...

    def forget(self, key: str) -> None:
        """Drop the state of ``key`` (its file vanished); a missing key is not an error."""
        ...
