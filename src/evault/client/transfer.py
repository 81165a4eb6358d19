"""Deposits and retrievals that verify everything they are handed (paper §2.3.2, DESIGN §5–§6).

Deposit (:func:`deposit_file`)
    The file is hashed (SHA-256) first, then streamed to the gateway in 1 MiB chunks with its
    length and its hash in ``Evault-Sha256``; the gateway refuses the deposit if what arrives
    hashes differently, so a file that changes between the two reads is never stored under
    the wrong hash.  The receipt is verified -- RSA-PSS signature under the vault public key,
    and owner, name, version, size and SHA-256 equal to what was sent -- and kept in the local
    receipt store *before* the deposit is reported as done.

Retrieve (:func:`retrieve_document`)
    The expected SHA-256 and size come from the receipt kept at deposit, or else from the
    vault's receipt once its signature and fields verify.  The bytes are hashed as they stream
    into a temporary file in the destination directory; only if length and hash match is the
    file fsynced and renamed over the destination (then the directory is fsynced).  Otherwise
    the temporary file is deleted and nothing appears at the destination.

Batches run on a small thread pool (:func:`run_batch`); each item succeeds or fails on its own,
and every failure is one sentence.  Memory stays bounded by the chunk size times the jobs.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Generic, Protocol, TypeVar

import httpx

from evault.client.gateway import HEADER_VERSION, Answer, GatewaySession
from evault.client.profile import check_relative_path
from evault.client.receipt_store import ReceiptStore
from evault.client.receipts import Expected, Receipt, VaultKey, verify_receipt
from evault.errors import (
    BadGatewayAnswer,
    ContentMismatch,
    EvaultError,
    FormatError,
    ReceiptRejected,
    TransportError,
)

CHUNK_BYTES: Final = 1024 * 1024
DEFAULT_JOBS: Final = 4


def _current_umask() -> int:
    # Read once, at import, before any worker thread exists (os.umask sets while it reads).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK: Final = _current_umask()


class Progress(Protocol):
    """What a batch reports as it goes (the CLI draws it with rich; tests count it)."""

    def file_started(self, label: str, size: int) -> None: ...

    def advance(self, nbytes: int) -> None: ...

    def file_done(self, label: str, ok: bool) -> None: ...


class NoProgress:
    def file_started(self, label: str, size: int) -> None:
        pass

    def advance(self, nbytes: int) -> None:
        pass

    def file_done(self, label: str, ok: bool) -> None:
        pass


@dataclass
class VaultClient:
    """Everything an operation needs: the session, the key it trusts, the receipt store, who."""

    session: GatewaySession
    key: VaultKey
    receipts: ReceiptStore
    owner: str


# --- hashing and verified writes ----------------------------------------------------------------


def sha256_file(path: Path, progress: Progress | None = None) -> tuple[str, int]:
    """(hex SHA-256, size) of a file, read in chunks."""
    h = hashlib.sha256()
    size = 0
    with path.open("rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            h.update(chunk)
            size += len(chunk)
            if progress is not None:
                progress.advance(len(chunk))
    return h.hexdigest(), size


def fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (POSIX); a no-op where it cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class ContentCheck:
    """Counts and hashes bytes as they arrive, against the size and SHA-256 a receipt signs.

    ``update`` raises ContentMismatch as soon as there are more bytes than ``expected_size``
    (so a transfer stops at once); ``verify`` raises it unless the total is exactly the
    signed size and hash.
    """

    def __init__(self, what: str, expected_size: int, expected_sha256: str) -> None:
        self.what = what
        self.expected_size = expected_size
        self.expected_sha256 = expected_sha256
        self.count = 0
        self._hash = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        self.count += len(chunk)
        if self.count > self.expected_size:
            raise ContentMismatch(
                self.what, self.expected_sha256, None, self.expected_size, self.count
            )
        self._hash.update(chunk)

    def verify(self) -> None:
        actual = self._hash.hexdigest()
        if self.count != self.expected_size or actual != self.expected_sha256:
            raise ContentMismatch(
                self.what, self.expected_sha256, actual, self.expected_size, self.count
            )


def write_atomically(dest: Path, chunks: Iterable[bytes], *, finish: Callable[[], None]) -> None:
    """Write ``chunks`` to a temporary file next to ``dest`` (same file system, so the rename
    is atomic); rename it over ``dest`` only if ``finish`` (the last checks) passes after the
    last chunk, then fsync the directory.  On any error the temporary file is removed."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    tmp = Path(tmp_name)
    done = False
    try:
        with os.fdopen(fd, "wb") as f:
            for chunk in chunks:
                f.write(chunk)
            finish()
            f.flush()
            os.fsync(f.fileno())
        # mkstemp makes the file 0600; a retrieved document gets the usual permissions.
        os.chmod(tmp, 0o666 & ~_UMASK)
        os.replace(tmp, dest)
        done = True
    finally:
        if not done:
            tmp.unlink(missing_ok=True)
    fsync_directory(dest.parent)


def write_verified(
    dest: Path,
    chunks: Iterable[bytes],
    *,
    expected_size: int,
    expected_sha256: str,
    what: str,
    progress: Progress | None = None,
) -> None:
    """Write ``chunks`` to ``dest`` atomically, only if they are exactly what a receipt signs.

    The bytes go to a temporary file next to ``dest`` (same file system, so the rename is
    atomic), hashed as they arrive; more bytes than ``expected_size`` stop the transfer at once.
    On a match: fsync, rename over ``dest``, fsync the directory.  On anything else the
    temporary file is removed and ContentMismatch (or the transfer's own error) is raised.
    """
    check = ContentCheck(what, expected_size, expected_sha256)

    def checked() -> Iterator[bytes]:
        for chunk in chunks:
            check.update(chunk)
            yield chunk
            # Counted once the chunk is written (the writer resumes this generator).
            if progress is not None:
                progress.advance(len(chunk))

    write_atomically(dest, checked(), finish=check.verify)


def local_path_for(base: Path, name: str) -> Path:
    """Where document ``name`` goes below ``base``: its ``/`` segments become directories."""
    try:
        check_relative_path(name, param="name")
    except ValueError:
        raise FormatError(
            f"the document name {name!r} cannot be used as a local path below {base}"
        ) from None
    return base.joinpath(*name.split("/"))


# --- deposit ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DepositItem:
    """A local file and the document name it is deposited under; ``sha256`` if already known."""

    path: Path
    name: str
    sha256: str | None = None


@dataclass(frozen=True)
class Deposited:
    item: DepositItem
    receipt: Receipt
    gateway: str
    faulty_nodes: dict[str, str] = field(default_factory=dict)
    failed_nodes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_answer(
        cls, item: DepositItem, receipt: Receipt, gateway: str, answer: dict[str, Any]
    ) -> Deposited:
        """With the faulty and failed nodes the deposit answer names (none if malformed)."""
        return cls(
            item,
            receipt,
            gateway,
            _str_map(answer.get("faulty_nodes")),
            _str_map(answer.get("failed_nodes")),
        )

    def to_json_obj(self) -> dict[str, Any]:
        s = self.receipt.statement
        return {
            "path": str(self.item.path),
            "name": s.name,
            "version": s.version,
            "size": s.size,
            "sha256": s.sha256,
            "deposited_at": s.deposited_at,
            "receipt": {
                "statement": self.receipt.to_json_obj()["statement"],
                "signature": self.receipt.to_json_obj()["signature"],
            },
            "faulty_nodes": self.faulty_nodes,
            "failed_nodes": self.failed_nodes,
        }


def file_chunks(path: Path, size: int, progress: Progress) -> Iterator[bytes]:
    """The first ``size`` bytes of ``path`` in CHUNK_BYTES pieces (fewer if the file has
    shrunk since ``size`` was taken), each counted in ``progress`` as it is read."""
    read = 0
    with path.open("rb") as f:
        while read < size:
            chunk = f.read(min(CHUNK_BYTES, size - read))
            if not chunk:
                break
            read += len(chunk)
            progress.advance(len(chunk))
            yield chunk


def hashed_as_sent(chunks: Iterable[bytes], seen: dict[str, Any]) -> Iterator[bytes]:
    """``chunks`` passed on; once all are sent, ``seen`` holds their ``sha256`` (hex) and
    ``size``, so a deposit can tell what really went out (a file may change while it is read)."""
    h = hashlib.sha256()
    sent = 0
    for chunk in chunks:
        h.update(chunk)
        sent += len(chunk)
        yield chunk
    seen["sha256"], seen["size"] = h.hexdigest(), sent


def deposit_file(client: VaultClient, item: DepositItem, progress: Progress) -> Deposited:
    """Deposit one file and verify its receipt (module docstring); raises EvaultError/OSError."""
    size = item.path.stat().st_size
    progress.file_started(item.name, size)
    sha = item.sha256 if item.sha256 is not None else sha256_file(item.path)[0]
    seen: dict[str, Any] = {}

    def body() -> Iterator[bytes]:
        yield from hashed_as_sent(file_chunks(item.path, size, progress), seen)

    try:
        answer, gateway = client.session.deposit(item.name, body, size=size, sha256=sha)
    except EvaultError:
        if "size" in seen and (seen["size"] != size or seen["sha256"] != sha):
            raise ContentMismatch(
                f"file {item.path} (it changed while it was deposited; nothing was stored)",
                sha,
                seen["sha256"],
                size,
                seen["size"],
            ) from None
        raise
    receipt = deposit_receipt(client, item.name, answer, gateway, size=size, sha256=sha)
    if not isinstance(answer.get("version"), int):
        raise BadGatewayAnswer(gateway, "the deposit answer has no version number")
    client.receipts.put(receipt, "deposit")
    return Deposited.from_answer(item, receipt, gateway, answer)


def deposit_receipt(
    client: VaultClient,
    name: str,
    answer: dict[str, Any],
    gateway: str,
    *,
    size: int,
    sha256: str,
) -> Receipt:
    """The receipt in a deposit answer, verified: signature, owner, name, the version the
    answer names (if it names one), and the ``size`` and ``sha256`` that were sent."""
    receipt_obj = answer.get("receipt")
    if not isinstance(receipt_obj, dict):
        raise BadGatewayAnswer(gateway, "the deposit answer has no receipt object")
    try:
        receipt = Receipt.from_base64(receipt_obj.get("statement"), receipt_obj.get("signature"))
    except FormatError as exc:
        raise ReceiptRejected(f"{name!r}", f"it is malformed: {exc}") from None
    version = answer.get("version")
    verify_receipt(
        client.key,
        receipt,
        Expected(
            owner=client.owner,
            name=name,
            version=version if isinstance(version, int) else None,
            size=size,
            sha256=sha256,
        ),
        what=f"{name!r}",
    )
    return receipt


def _str_map(value: object) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


# --- retrieve -----------------------------------------------------------------------------------


def trusted_receipt(client: VaultClient, name: str, version: int | None) -> tuple[Receipt, str]:
    """The receipt a retrieval is checked against, and where it came from ("local"/"vault").

    A receipt kept locally for that version wins.  Otherwise the vault's receipt is fetched and
    must verify (signature, owner, name, version if asked); it is then kept.  If both exist and
    disagree the retrieval stops: the vault signed two different things for one version.
    """
    if version is not None:
        kept = client.receipts.get(client.owner, name, version)
        if kept is not None:
            return kept.receipt, "local"
    body = client.session.receipt(name, version)
    try:
        receipt = Receipt.from_base64(body.get("statement"), body.get("signature"))
    except FormatError as exc:
        raise ReceiptRejected(f"{name!r}", f"the vault's receipt is malformed: {exc}") from None
    verify_receipt(
        client.key,
        receipt,
        Expected(owner=client.owner, name=name, version=version),
        what=f"{name!r} version {version if version is not None else '(latest)'}",
    )
    s = receipt.statement
    kept = client.receipts.get(client.owner, name, s.version)
    if kept is not None:
        k = kept.receipt.statement
        if (k.sha256, k.size) != (s.sha256, s.size):
            raise ReceiptRejected(
                f"{name!r} version {s.version}",
                f"the vault's receipt signs SHA-256 {s.sha256} ({s.size} bytes) but the one "
                f"kept at deposit signs {k.sha256} ({k.size} bytes)",
            )
        return kept.receipt, "local"
    client.receipts.put(receipt, "vault")
    return receipt, "vault"


@dataclass(frozen=True)
class RetrieveItem:
    name: str
    version: int | None
    dest: Path


@dataclass(frozen=True)
class Retrieved:
    item: RetrieveItem
    receipt: Receipt
    checked_against: str
    gateway: str

    def to_json_obj(self) -> dict[str, Any]:
        s = self.receipt.statement
        return {
            "name": s.name,
            "version": s.version,
            "size": s.size,
            "sha256": s.sha256,
            "path": str(self.item.dest),
            "checked_against": self.checked_against,
        }


def document_chunks(answer: Answer, name: str, version: int) -> Iterator[bytes]:
    """The body of ``session.document(name, version)`` in CHUNK_BYTES pieces.

    Checks at once that the gateway says it served that version; a transfer that breaks off
    while the pieces are read is a TransportError.
    """
    served = answer.response.headers.get(HEADER_VERSION)
    if served is not None and served.strip() != str(version):
        raise BadGatewayAnswer(
            answer.url, f"asked for version {version} of {name!r}, got version {served}"
        )

    def chunks() -> Iterator[bytes]:
        try:
            yield from answer.response.iter_bytes(CHUNK_BYTES)
        except httpx.HTTPError as exc:
            raise TransportError(
                f"the transfer of {name!r} from {answer.url} broke off ({exc or type(exc)})"
            ) from None

    return chunks()


def retrieve_document(client: VaultClient, item: RetrieveItem, progress: Progress) -> Retrieved:
    """Retrieve one version into ``item.dest``, verified and atomically (module docstring)."""
    receipt, source = trusted_receipt(client, item.name, item.version)
    s = receipt.statement
    progress.file_started(item.name, s.size)
    what = f"the retrieved document {s.name!r} version {s.version}"
    with client.session.document(s.name, s.version) as answer:
        write_verified(
            item.dest,
            document_chunks(answer, s.name, s.version),
            expected_size=s.size,
            expected_sha256=s.sha256,
            what=what,
            progress=progress,
        )
        return Retrieved(item, receipt, source, answer.url)


# --- batches ------------------------------------------------------------------------------------

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Outcome(Generic[T, R]):
    """One batch item: its result, or the sentence saying why it failed."""

    item: T
    result: R | None
    error: str | None
    code: str | None = None


def run_batch(
    items: Sequence[T],
    work: Callable[[T], R],
    *,
    label: Callable[[T], str],
    progress: Progress,
    jobs: int = DEFAULT_JOBS,
) -> list[Outcome[T, R]]:
    """Run ``work`` on every item (``jobs`` at a time); outcomes in the order of ``items``.

    An EvaultError or OSError fails its item only; anything else is a bug and propagates.
    """
    if jobs < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    lock = threading.Lock()
    outcomes: list[Outcome[T, R] | None] = [None] * len(items)

    def one(index: int) -> None:
        item = items[index]
        try:
            result = work(item)
        except EvaultError as exc:
            outcome: Outcome[T, R] = Outcome(item, None, f"{label(item)}: {exc}", exc.code)
        except OSError as exc:
            where = exc.filename if exc.filename is not None else label(item)
            outcome = Outcome(item, None, f"{where}: {exc.strerror or exc}", "os_error")
        else:
            outcome = Outcome(item, result, None)
        with lock:
            outcomes[index] = outcome
        progress.file_done(label(item), outcome.error is None)

    if jobs == 1 or len(items) <= 1:
        for i in range(len(items)):
            one(i)
    else:
        with ThreadPoolExecutor(max_workers=jobs, thread_name_prefix="evault-batch") as pool:
            for future in [pool.submit(one, i) for i in range(len(items))]:
                future.result()
    return [o for o in outcomes if o is not None]


# --- what `evault deposit PATH...` means -------------------------------------------------------


def _walk_directory(top: Path) -> Iterator[tuple[Path, str]]:
    """Regular files below ``top`` with their ``/`` relative paths, in name order.

    Symbolic links are not followed: a link to a file inside ``top`` is deposited as that
    file's content; links to directories or out of ``top`` are left out, so a walk never
    escapes the tree or loops.
    """
    real_top = top.resolve()
    stack: list[tuple[str, Path]] = [("", top)]
    while stack:
        rel_dir, directory = stack.pop()
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        subdirs: list[tuple[str, Path]] = []
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.is_dir(follow_symlinks=False):
                subdirs.append((rel, Path(entry.path)))
            elif entry.is_symlink():
                target = Path(entry.path).resolve()
                if target.is_relative_to(real_top) and target.is_file():
                    yield Path(entry.path), rel
            elif entry.is_file(follow_symlinks=False):
                yield Path(entry.path), rel
        stack.extend(reversed(subdirs))


def expand_deposit_paths(paths: Sequence[Path], name: str | None) -> list[DepositItem]:
    """The files ``evault deposit PATH... [--name NAME]`` deposits, with their names.

    * One file: its document name is ``NAME``, or its base name.
    * A directory: every file below it, named ``NAME/relative/path`` where NAME defaults to
      the directory's base name.
    * Several paths with ``--name``: NAME is a prefix, ``NAME/<base name>[/relative/path]``.

    Two files mapping to one name is a FormatError before anything is sent.
    """
    if not paths:
        raise ValueError("paths: at least one path is needed")
    prefix = name.strip("/") if name is not None and len(paths) > 1 else None
    items: list[DepositItem] = []
    for path in paths:
        if path.is_dir():
            base = path.resolve().name
            top = (name.strip("/") if name and len(paths) == 1 else base) or "root"
            if prefix:
                top = f"{prefix}/{base}"
            items.extend(DepositItem(p, f"{top}/{rel}") for p, rel in _walk_directory(path))
        elif path.is_file():
            leaf = path.name
            doc = name if name is not None and len(paths) == 1 else leaf
            if prefix:
                doc = f"{prefix}/{leaf}"
            items.append(DepositItem(path, doc))
        elif path.exists():
            raise FormatError(f"{path} is neither a regular file nor a directory")
        else:
            raise FileNotFoundError(2, "No such file or directory", str(path))
    seen: dict[str, Path] = {}
    for item in items:
        if item.name in seen:
            raise FormatError(
                f"{seen[item.name]} and {item.path} would both be deposited as {item.name!r}"
            )
        seen[item.name] = item.path
    return items
