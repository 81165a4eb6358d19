"""`evault backup` and `evault restore`: profiles carried out against a vault (paper §2.3.2).

Plan, then execute (restic's ``PlanPrune`` / ``Execute``), so ``--dry-run`` is the plan alone:

1. **Walk** every root (:func:`walk_root`).  Excluded directories are pruned as the walk meets
   them, never read.  Symbolic links are not followed out of the root: a link to a file inside
   the root is backed up as that file's content, a link to a directory is skipped (its target,
   if inside the root, is walked where it lies), anything else a link points to is skipped.
   Only regular files are deposited.
2. **Decide** with the archive bit (:mod:`evault.client.changes`) against the local state
   database: new and modified files are to be deposited; unchanged ones are not read at all.
3. **List** the profile's documents and versions in the vault, add the versions the deposits
   will create (each the new latest), and plan **retention** (:meth:`BackupProfile.plan_retention`).
4. Print the plan.  ``--dry-run`` stops here; nothing was written anywhere.
5. **Execute**: deposit (each receipt verified, then its state recorded -- never before), record
   the states that need no deposit, forget vanished files, then list the versions again and
   delete what retention removes, from the vault's real list rather than the prediction, so a
   failed deposit never makes retention remove one version too many.

``restore`` writes the latest version of every document of the profile back to its root (or
below ``--to DIR``), each verified and written atomically; a file already there with the same
content is left alone, a different one is replaced only with ``--overwrite``.  Restoring into
the roots records the archive bits, so the next backup does not deposit what it just restored.
"""

from __future__ import annotations

import hashlib
import os
import stat as stat_mod
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from evault.client.changes import ChangeDecision, ChangePlan, FileStat, FileState, plan_changes
from evault.client.profile import BackupProfile, ProfileRoot
from evault.client.state_store import SqliteChangeState
from evault.client.transfer import (
    Deposited,
    DepositItem,
    Outcome,
    Progress,
    Retrieved,
    RetrieveItem,
    VaultClient,
    deposit_file,
    local_path_for,
    retrieve_document,
    run_batch,
    sha256_file,
    trusted_receipt,
)
from evault.errors import ConfigError, EvaultError, FormatError
from evault.protocol.statement import parse_time
from evault.retention import RetentionPlan, VersionInfo

# --- walking ------------------------------------------------------------------------------------

#: The public API refuses a document name whose last segment is one of these (they name the
#: sub-resources of a document); such files are skipped, visibly, rather than failing each run.
RESERVED_LAST_SEGMENTS: Final = ("receipt", "versions")
RESERVED_REASON: Final = (
    "the vault refuses document names ending in 'receipt' or 'versions' (public API); "
    "deposit it under another name with `evault deposit --name`"
)


@dataclass(frozen=True)
class LocalFile:
    """A selected regular file: where it is, what stat said, and its document name."""

    root: ProfileRoot
    relative: str
    path: Path
    stat: FileStat
    name: str


@dataclass(frozen=True)
class Skipped:
    relative: str
    reason: str


def walk_root(profile: BackupProfile, root: ProfileRoot) -> tuple[list[LocalFile], list[Skipped]]:
    """The files of ``root`` the profile selects (module docstring, step 1), sorted by path."""
    base = Path(root.path)
    try:
        if not base.is_dir():
            raise ConfigError(f"backup root {root.path} is not a directory")
        real_base = base.resolve(strict=True)
    except OSError as exc:
        raise ConfigError(f"backup root {root.path} cannot be used: {exc.strerror}") from None
    files: list[LocalFile] = []
    skipped: list[Skipped] = []
    stack: list[tuple[str, Path]] = [("", base)]
    while stack:
        rel_dir, directory = stack.pop()
        try:
            with os.scandir(directory) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            skipped.append(Skipped(rel_dir or ".", f"cannot be listed: {exc.strerror}"))
            continue
        subdirs: list[tuple[str, Path]] = []
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                rel.encode("utf-8")
            except UnicodeEncodeError:
                skipped.append(Skipped(repr(rel), "the name is not valid UTF-8"))
                continue
            try:
                if entry.is_dir(follow_symlinks=False):
                    if profile.selector.directory(rel).selected:
                        subdirs.append((rel, Path(entry.path)))
                    continue
                if not profile.selector.file(rel).selected:
                    continue
                if entry.name in RESERVED_LAST_SEGMENTS:
                    skipped.append(Skipped(rel, RESERVED_REASON))
                    continue
                if entry.is_symlink():
                    target = Path(entry.path).resolve()
                    if not target.is_relative_to(real_base):
                        skipped.append(Skipped(rel, "symbolic link pointing out of the root"))
                        continue
                    st = os.stat(entry.path)
                    if not stat_mod.S_ISREG(st.st_mode):
                        skipped.append(Skipped(rel, "symbolic link to something not a file"))
                        continue
                else:
                    st = entry.stat(follow_symlinks=False)
                    if not stat_mod.S_ISREG(st.st_mode):
                        skipped.append(Skipped(rel, "not a regular file"))
                        continue
            except OSError as exc:
                skipped.append(Skipped(rel, f"cannot be read: {exc.strerror}"))
                continue
            files.append(
                LocalFile(
                    root=root,
                    relative=rel,
                    path=Path(entry.path),
                    stat=FileStat(st.st_size, st.st_mtime_ns),
                    name=profile.document_name(root, rel),
                )
            )
        # Depth-first in name order: push in reverse so the smallest name is walked first.
        stack.extend(reversed(subdirs))
    files.sort(key=lambda f: f.relative)
    return files, skipped


# --- planning -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BackupPlan:
    """What a backup will do; ``retention`` includes the versions the deposits will create."""

    profile: BackupProfile
    files: dict[str, LocalFile]
    skipped: tuple[Skipped, ...]
    changes: ChangePlan
    retention: RetentionPlan
    predicted: frozenset[tuple[str, int]]
    now: datetime

    @property
    def deposits(self) -> tuple[ChangeDecision, ...]:
        return self.changes.to_deposit

    @property
    def removals(self) -> tuple[VersionInfo, ...]:
        return self.retention.removed

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "profile": self.profile.name,
            "deposit": [
                {
                    "name": d.key,
                    "path": str(self.files[d.key].path),
                    "size": self.files[d.key].stat.size,
                    "change": d.kind.value,
                    "reason": d.reason,
                }
                for d in self.deposits
            ],
            "unchanged": sum(1 for d in self.changes.decisions if not d.needs_deposit),
            "vanished": list(self.changes.vanished),
            "skipped": [{"path": s.relative, "reason": s.reason} for s in self.skipped],
            "remove": [
                {
                    "name": d.version.name,
                    "version": d.version.version,
                    "deposited_at": _time(d.version.deposited_at),
                    "size": d.version.size,
                    "reasons": list(d.reasons),
                }
                for d in self.retention.decisions
                if not d.keep
            ],
            "keep": [
                {
                    "name": d.version.name,
                    "version": d.version.version,
                    "new": (d.version.name, d.version.version) in self.predicted,
                    "reasons": list(d.reasons),
                }
                for d in self.retention.decisions
                if d.keep
            ],
        }


def _time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def vault_versions(client: VaultClient, profile: BackupProfile) -> list[VersionInfo]:
    """Every version of the profile's documents in the vault.

    A document with one version is described by the listing itself; only documents with
    several versions cost a request for their version list.
    """
    out: list[VersionInfo] = []
    for doc in client.session.documents():
        name = str(doc["name"])
        if not profile.owns(name):
            continue
        count = doc.get("version_count", 0)
        if count == 1 and {"size", "deposited_at"} <= set(doc):
            out.append(_version_info(name, doc, version_key="latest_version"))
            continue
        out.extend(_version_info(name, v) for v in client.session.versions(name))
    return out


def _version_info(name: str, obj: dict[str, Any], version_key: str = "version") -> VersionInfo:
    try:
        return VersionInfo(
            name=name,
            version=int(obj[version_key]),
            deposited_at=parse_time(str(obj["deposited_at"])),
            size=int(obj["size"]),
        )
    except (KeyError, TypeError, ValueError, FormatError) as exc:
        raise FormatError(f"the vault's version list for {name!r} is malformed: {exc}") from None


def plan_backup(
    client: VaultClient,
    profile: BackupProfile,
    state: SqliteChangeState,
    *,
    now: datetime,
    recorded_ns: int,
    hash_progress: Callable[[str], None] | None = None,
) -> BackupPlan:
    """Steps 1–3 of the module docstring; reads files and the vault, writes nothing."""
    files: dict[str, LocalFile] = {}
    skipped: list[Skipped] = []
    for root in profile.roots:
        found, skip = walk_root(profile, root)
        files.update((f.name, f) for f in found)
        skipped.extend(Skipped(f"{root.label}/{s.relative}", s.reason) for s in skip)

    def hash_file(key: str) -> bytes:
        if hash_progress is not None:
            hash_progress(key)
        digest = hashlib.sha256()
        with files[key].path.open("rb") as f:
            while chunk := f.read(1024 * 1024):
                digest.update(chunk)
        return digest.digest()

    previous = dict(state.get_many(files))
    prefix = f"{profile.name_prefix}/" if profile.name_prefix else ""
    for root in profile.roots:
        for key in state.keys_under(f"{prefix}{root.label}/"):
            if key not in previous:
                stored = state.get(key)
                if stored is not None:
                    previous[key] = stored
    changes = plan_changes(
        ((name, f.stat) for name, f in files.items()),
        previous,
        hash_file,
        recorded_ns=recorded_ns,
    )
    existing = vault_versions(client, profile)
    latest: dict[str, int] = {}
    for v in existing:
        latest[v.name] = max(latest.get(v.name, 0), v.version)
    predicted = [
        VersionInfo(d.key, latest.get(d.key, 0) + 1, now, files[d.key].stat.size)
        for d in changes.to_deposit
    ]
    retention = profile.plan_retention([*existing, *predicted], now=now)
    return BackupPlan(
        profile=profile,
        files=files,
        skipped=tuple(skipped),
        changes=changes,
        retention=retention,
        predicted=frozenset((v.name, v.version) for v in predicted),
        now=now,
    )


# --- executing ----------------------------------------------------------------------------------


@dataclass
class BackupReport:
    deposited: list[Deposited] = field(default_factory=list)
    removed: list[VersionInfo] = field(default_factory=list)
    recorded_without_deposit: int = 0
    forgotten: int = 0
    failures: list[str] = field(default_factory=list)
    retention: RetentionPlan | None = None

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "deposited": [d.to_json_obj() for d in self.deposited],
            "removed": [
                {"name": v.name, "version": v.version, "deposited_at": _time(v.deposited_at)}
                for v in self.removed
            ],
            "recorded_without_deposit": self.recorded_without_deposit,
            "forgotten": self.forgotten,
            "failures": self.failures,
        }


def execute_backup(
    client: VaultClient,
    plan: BackupPlan,
    state: SqliteChangeState,
    progress: Progress,
    *,
    jobs: int,
) -> BackupReport:
    """Step 5 of the module docstring."""
    report = BackupReport()
    by_key = {d.key: d for d in plan.deposits}
    items = [
        DepositItem(
            plan.files[d.key].path,
            d.key,
            d.sha256.hex() if d.sha256 is not None else None,
        )
        for d in plan.deposits
    ]

    def work(item: DepositItem) -> Deposited:
        done = deposit_file(client, item, progress)
        decision = by_key[item.name]
        s = done.receipt.statement
        # Record exactly what the verified receipt vouches for: the state's hash is the one
        # the vault signed, so a change after the walk is found next time.
        state.put(
            item.name,
            FileState(
                s.size,
                decision.new_state.mtime_ns,
                bytes.fromhex(s.sha256),
                decision.new_state.recorded_ns,
            ),
        )
        return done

    outcomes = run_batch(items, work, label=lambda i: i.name, progress=progress, jobs=jobs)
    for o in outcomes:
        if o.result is not None:
            report.deposited.append(o.result)
        elif o.error is not None:
            report.failures.append(o.error)
    for decision in plan.changes.decisions:
        if decision.record_without_deposit:
            state.put(decision.key, decision.new_state)
            report.recorded_without_deposit += 1
    for key in plan.changes.vanished:
        state.forget(key)
        report.forgotten += 1

    try:
        retention = plan.profile.plan_retention(vault_versions(client, plan.profile), now=plan.now)
    except EvaultError as exc:
        report.failures.append(f"retention: listing the vault's versions failed: {exc}")
        return report
    report.retention = retention
    for v in retention.removed:
        try:
            client.session.delete(v.name, v.version)
        except EvaultError as exc:
            report.failures.append(f"{v.name} version {v.version}: removal failed: {exc}")
        else:
            report.removed.append(v)
    return report


# --- restore ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RestoreTarget:
    name: str
    version: int
    dest: Path


@dataclass(frozen=True)
class Restored:
    target: RestoreTarget
    retrieved: Retrieved | None  # None when the file was already there with the same content

    def to_json_obj(self) -> dict[str, Any]:
        return {
            "name": self.target.name,
            "version": self.target.version,
            "path": str(self.target.dest),
            "status": "restored" if self.retrieved is not None else "already there",
        }


def restore_targets(
    client: VaultClient, profile: BackupProfile, to: Path | None
) -> list[RestoreTarget]:
    """Latest version of every document of the profile, and where it goes."""
    targets: list[RestoreTarget] = []
    for doc in client.session.documents():
        name = str(doc["name"])
        located = profile.locate(name)
        if located is None:
            continue
        root, relative = located
        base = Path(root.path) if to is None else (to / root.label)
        targets.append(
            RestoreTarget(name, int(doc["latest_version"]), local_path_for(base, relative))
        )
    return sorted(targets, key=lambda t: t.name)


def restore(
    client: VaultClient,
    targets: Sequence[RestoreTarget],
    progress: Progress,
    *,
    overwrite: bool,
    state: SqliteChangeState | None,
    jobs: int,
) -> list[Outcome[RestoreTarget, Restored]]:
    """Bring every target back (module docstring); ``state`` given when restoring in place."""

    def work(target: RestoreTarget) -> Restored:
        if target.dest.is_symlink() or (target.dest.exists() and not target.dest.is_file()):
            raise ConfigError(f"{target.dest} exists and is not a regular file; not replaced")
        if target.dest.exists():
            receipt, _source = trusted_receipt(client, target.name, target.version)
            current, size = sha256_file(target.dest)
            if (current, size) == (receipt.statement.sha256, receipt.statement.size):
                _record(target, current)
                return Restored(target, None)
            if not overwrite:
                raise ConfigError(
                    f"{target.dest} exists with other content; pass --overwrite to replace it"
                )
        result = retrieve_document(
            client, RetrieveItem(target.name, target.version, target.dest), progress
        )
        _record(target, result.receipt.statement.sha256)
        return Restored(target, result)

    def _record(target: RestoreTarget, sha256_hex: str) -> None:
        if state is None:
            return
        st = target.dest.stat()
        state.put(
            target.name,
            FileState(st.st_size, st.st_mtime_ns, bytes.fromhex(sha256_hex), time.time_ns()),
        )

    return run_batch(targets, work, label=lambda t: t.name, progress=progress, jobs=jobs)
