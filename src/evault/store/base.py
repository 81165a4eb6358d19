"""The slice-store seam: what a node's storage promises, whatever it is built on.

A store holds *objects*: one document version as one node keeps it (its own slice, the whole
fingerprint vector, the leaf hashes of its own slice and the statement it built).  Contract:

* **Atomic and durable commit.**  ``begin(object_id)`` opens a :class:`SliceWriter`; blocks are
  appended with ``write``; ``commit(record)`` makes the slice and its index row durable, in that
  order, and only returns once both are on stable storage.  Until ``commit`` returns the object
  does not exist for any reader (``get``, ``list_objects`` and ``open_slice`` never see it); if the
  process dies at any point before, the next ``fsck`` removes every trace.  The node signs only
  after ``commit`` returned (docs/spec/node-protocol.md, deposit step 4).
* **Versions are never rewritten.**  ``begin`` raises ``ObjectExists`` for a committed object, or
  for one whose deposit is running; an object found *damaged* may be deposited again (repair).
* **Disk full** raises ``InsufficientStorage`` from ``write`` or ``commit``; nothing is committed
  and the temporary file is gone.
* **Reads stream** in bounded memory: ``open_slice`` returns a reader over the leaves, then the
  blocks from a given segment on.
* **Delete is idempotent**, and cancels a deposit of the same object that is still running (so a
  deposit the gateway gave up on cannot be committed after it was discarded).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol, Self

from evault.errors import FormatError

LEAF_BYTES: Final = 32
DIGEST_BYTES: Final = 32

State = Literal["committed", "damaged"]


@dataclass(frozen=True)
class ObjectRecord:
    """Everything a node keeps about one object besides the slice bytes themselves.

    ``block_bytes`` is the length of the node's block of a *full* segment; every segment but the
    last is full, so segment ``K`` starts at byte ``K * block_bytes`` of the slice.
    """

    object_id: str
    owner: str
    name: str
    version: int
    statement: bytes
    fv: tuple[bytes, ...]
    leaves: bytes
    slice_index: int
    slice_bytes: int
    segment_count: int
    block_bytes: int
    created_at: str
    state: State = "committed"
    damage: str | None = None

    def __post_init__(self) -> None:
        if len(self.leaves) != LEAF_BYTES * self.segment_count:
            raise ValueError(
                f"leaves: expected {LEAF_BYTES} bytes per segment for {self.segment_count} "
                f"segments, got {len(self.leaves)}"
            )
        if not self.fv or any(len(root) != DIGEST_BYTES for root in self.fv):
            raise ValueError("fv: expected a non-empty list of 32-byte roots")
        if not 0 <= self.slice_index < len(self.fv):
            raise ValueError(f"slice_index: {self.slice_index} is not in 0..{len(self.fv) - 1}")
        if self.slice_bytes < 0 or self.block_bytes < 0 or self.segment_count < 0:
            raise ValueError("slice_bytes, block_bytes, segment_count: must be >= 0")
        full = max(self.segment_count - 1, 0) * self.block_bytes
        if not full <= self.slice_bytes <= self.segment_count * self.block_bytes:
            raise ValueError(
                f"slice_bytes: {self.slice_bytes} does not fit {self.segment_count} segments of "
                f"at most {self.block_bytes} bytes each, all but the last full"
            )

    def segment_offset(self, segment: int) -> int:
        """Byte offset in the slice file where the block of ``segment`` starts."""
        if not 0 <= segment <= self.segment_count:
            raise ValueError(f"segment: {segment} is not in 0..{self.segment_count}")
        return min(segment * self.block_bytes, self.slice_bytes)

    def fv_bytes(self) -> bytes:
        return b"".join(self.fv)

    @staticmethod
    def fv_from_bytes(data: bytes) -> tuple[bytes, ...]:
        if not data or len(data) % DIGEST_BYTES:
            raise FormatError(f"stored fingerprint vector has a bad length {len(data)}")
        return tuple(data[i : i + DIGEST_BYTES] for i in range(0, len(data), DIGEST_BYTES))


@dataclass(frozen=True)
class FsckReport:
    """What a store check found and did; every list names object ids or file names."""

    temp_files_removed: tuple[str, ...] = ()
    orphan_files_removed: tuple[str, ...] = ()
    damaged: tuple[tuple[str, str], ...] = ()  # (object_id, reason), newly found this run
    checked: int = 0

    @property
    def clean(self) -> bool:
        return not (self.temp_files_removed or self.orphan_files_removed or self.damaged)

    def sentences(self) -> list[str]:
        out = [f"checked {self.checked} object(s)"]
        if self.temp_files_removed:
            out.append(f"removed {len(self.temp_files_removed)} interrupted deposit(s)")
        if self.orphan_files_removed:
            out.append(f"removed {len(self.orphan_files_removed)} slice file(s) with no index row")
        out += [f"object {oid} is damaged: {why}" for oid, why in self.damaged]
        return out


@dataclass(frozen=True)
class ListPage:
    objects: tuple[tuple[str, bytes], ...]  # (object_id, statement bytes), by object id
    next_after: str | None = field(default=None)


class SliceWriter(Protocol):
    """One deposit in progress.  Use as a context manager: leaving it uncommitted aborts."""

    @property
    def bytes_written(self) -> int: ...

    def write(self, data: bytes | memoryview) -> None: ...

    def commit(self, record: ObjectRecord) -> None: ...

    def abort(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *exc: object) -> None: ...


class SliceReader(Protocol):
    """An open slice: the record, and its bytes from a segment on.  Close it when done."""

    record: ObjectRecord

    def iter_blocks(self, chunk_bytes: int) -> Iterator[bytes]: ...

    def read_chunk(self, chunk_bytes: int) -> bytes: ...

    def close(self) -> None: ...


class SliceStore(Protocol):
    """One node's storage; see the module docstring for the contract."""

    def begin(self, object_id: str) -> SliceWriter: ...

    def get(self, object_id: str) -> ObjectRecord: ...

    def has_committed(self, object_id: str) -> bool: ...

    def open_slice(self, object_id: str, from_segment: int = 0) -> SliceReader: ...

    def delete(self, object_id: str) -> bool: ...

    def list_objects(self, after: str | None, limit: int) -> ListPage: ...

    def count(self) -> int: ...

    def free_bytes(self) -> int: ...

    def fsck(self) -> FsckReport: ...

    def mark_damaged(self, object_id: str, reason: str) -> None: ...

    def close(self) -> None: ...
