"""Backup profiles: which files a backup deposits, under which names, and how many versions stay.

Paper §2.3.2: "using profiles and archive bits, like standard backup processes, [the client] can
create a list of files.  For example ... all the files matching the template ``*.c`` and ``*.h`` in
the directory ``/important/new/application`` should be backed up ... but the object files should be
ignored.  In addition, version control allows the client to specify in a profile the number of
copies of a file to be maintained at the server."

This module is pure: it parses a profile's TOML text (the caller reads the file), selects files
from a directory listing the caller made, maps files to document names and back, and plans
retention through :mod:`evault.retention`.  The format is specified in
``docs/spec/backup-profile.md``; the spec's examples are parsed by the tests.

Selection (:func:`select_files`)
--------------------------------
Paths are relative to a root, ``/``-separated, and matched with :class:`evault.retention.Glob`
(``.gitignore``-like: a pattern without ``/`` matches the basename at any depth, ``**`` matches any
number of segments, a trailing ``/`` matches directories only).

* A pattern that matches a directory covers everything beneath it.
* **Exclude wins over include.**  A file is excluded if an exclude pattern matches it or any of
  its ancestor directories; an excluded directory is not descended into at all (its subtree is
  pruned), so nothing under it can be included again.  There is no ``!`` negation.
* Otherwise a file is selected if an include pattern matches it or one of its ancestor
  directories.  No include list means every file.
* Directories themselves are never deposited; only files are selected.

Document names
--------------
A file's document name is ``name_prefix/label/relative/path``: the optional prefix, then the
root's label (by default the root directory's basename), then the path relative to the root.
The label is there even for a profile with one root, so that adding a second root later does
not rename the documents already in the vault; labels are unique within a profile, so the mapping
is reversible (:meth:`BackupProfile.locate`) and ``evault restore`` can put every file back.

Retention patterns in a profile are matched against the root-relative path (the same strings
the include and exclude patterns see), not against the full document name.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import PurePath
from typing import Any

from evault.errors import ProfileError
from evault.retention import (
    Glob,
    RetentionPlan,
    RetentionRule,
    VersionInfo,
    parse_duration,
    plan_retention,
)

__all__ = [
    "PROFILE_FORMAT_VERSION",
    "BackupProfile",
    "FileSelector",
    "ProfileRoot",
    "Selection",
    "check_relative_path",
    "explain_selection",
    "parse_profile",
    "select_files",
]

PROFILE_FORMAT_VERSION = 1

_PROFILE_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def check_relative_path(path: str, *, param: str = "path") -> None:
    """Raise ``ValueError`` naming ``param`` unless ``path`` is a clean relative ``/`` path."""
    if not isinstance(path, str):
        raise TypeError(f"{param} must be a str, got {type(path).__name__}")
    if not path or path.startswith("/") or "\x00" in path:
        raise ValueError(f"{param} must be a non-empty relative path, got {path!r}")
    if any(seg in ("", ".", "..") for seg in path.split("/")):
        raise ValueError(f"{param}: empty, '.' and '..' segments are not allowed, got {path!r}")


# ---------------------------------------------------------------------------------------------
# Selection
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Selection:
    """Why a path is (or is not) backed up; for a directory, ``selected`` means "descended"."""

    path: str
    is_dir: bool
    selected: bool
    reason: str


def _ancestors(path: str) -> list[str]:
    """``a/b/c`` -> ``['a', 'a/b']`` (outermost first)."""
    parts = path.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


@dataclass(frozen=True)
class FileSelector:
    """Compiled include/exclude patterns (semantics in the module docstring)."""

    include: tuple[Glob, ...]
    exclude: tuple[Glob, ...]
    _dir_cache: dict[str, tuple[str, str] | None] = field(
        default_factory=dict, repr=False, compare=False
    )

    @classmethod
    def from_patterns(cls, include: Sequence[str], exclude: Sequence[str]) -> FileSelector:
        """Compile; a bad pattern raises ``ValueError`` naming ``include`` or ``exclude``."""
        for param, patterns in (("include", include), ("exclude", exclude)):
            if isinstance(patterns, str):
                raise TypeError(f"{param} must be a sequence of patterns, not a single str")
        return cls(
            include=tuple(Glob.parse(p, param="include") for p in include),
            exclude=tuple(Glob.parse(p, param="exclude") for p in exclude),
        )

    def _first(self, globs: tuple[Glob, ...], path: str, is_dir: bool) -> Glob | None:
        return next((g for g in globs if g.matches(path, is_dir=is_dir)), None)

    def _pruned_by(self, directory: str) -> tuple[str, str] | None:
        """The outermost excluded directory at or above ``directory``, with its pattern."""
        if directory in self._dir_cache:
            return self._dir_cache[directory]
        result: tuple[str, str] | None = None
        ancestors = _ancestors(directory)
        if ancestors:
            result = self._pruned_by(ancestors[-1])
        if result is None:
            hit = self._first(self.exclude, directory, True)
            if hit is not None:
                result = (directory, hit.pattern)
        # A memo, not state: the answer depends only on the patterns and the path.
        self._dir_cache[directory] = result
        return result

    def directory(self, path: str) -> Selection:
        """Whether a walker should descend into directory ``path`` (root-relative)."""
        pruned = self._pruned_by(path)
        if pruned is None:
            return Selection(path, True, True, "descended")
        where, pattern = pruned
        if where == path:
            return Selection(path, True, False, f"excluded by {pattern!r} (subtree pruned)")
        return Selection(path, True, False, f"under excluded directory {where!r} ({pattern!r})")

    def file(self, path: str) -> Selection:
        """Whether file ``path`` (root-relative) is backed up, and why."""
        ancestors = _ancestors(path)
        pruned = self._pruned_by(ancestors[-1]) if ancestors else None
        if pruned is not None:
            where, pattern = pruned
            return Selection(
                path, False, False, f"under excluded directory {where!r} ({pattern!r})"
            )
        hit = self._first(self.exclude, path, False)
        if hit is not None:
            return Selection(path, False, False, f"excluded by {hit.pattern!r}")
        if not self.include:
            return Selection(path, False, True, "included (no include patterns: every file)")
        for candidate, is_dir in [(path, False), *((a, True) for a in reversed(ancestors))]:
            hit = self._first(self.include, candidate, is_dir)
            if hit is not None:
                if candidate == path:
                    return Selection(path, False, True, f"included by {hit.pattern!r}")
                return Selection(
                    path, False, True, f"included by {hit.pattern!r} (directory {candidate!r})"
                )
        return Selection(path, False, False, "not matched by any include pattern")

    def classify(self, path: str, is_dir: bool) -> Selection:
        check_relative_path(path, param="path")
        return self.directory(path) if is_dir else self.file(path)


def explain_selection(
    listing: Iterable[tuple[str, bool]], include: Sequence[str], exclude: Sequence[str]
) -> list[Selection]:
    """Every listed entry with its verdict and reason, sorted by path (for ``--dry-run``)."""
    selector = FileSelector.from_patterns(include, exclude)
    entries: dict[tuple[str, bool], None] = {}
    for entry in listing:
        if not (isinstance(entry, tuple) and len(entry) == 2 and isinstance(entry[1], bool)):
            raise TypeError(f"listing must hold (relative_path, is_dir) pairs, got {entry!r}")
        check_relative_path(entry[0], param="listing")
        entries[entry] = None
    return [selector.classify(p, d) for p, d in sorted(entries)]


def select_files(
    listing: Iterable[tuple[str, bool]], include: Sequence[str], exclude: Sequence[str]
) -> list[str]:
    """The files of ``listing`` that a backup deposits, sorted, each once.

    ``listing`` holds ``(root-relative path, is_dir)`` pairs as a walk of one root found them.
    Directory entries are optional: a file under an excluded directory is excluded whether or not
    the directory itself is listed, so the answer does not depend on how the walk was done.
    An empty ``include`` means every file.
    """
    return [
        s.path for s in explain_selection(listing, include, exclude) if s.selected and not s.is_dir
    ]


# ---------------------------------------------------------------------------------------------
# Profiles
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProfileRoot:
    """A local directory backed up by a profile; ``label`` is its first document-name segment."""

    path: str
    label: str


@dataclass(frozen=True)
class BackupProfile:
    """A parsed, validated backup profile (see ``docs/spec/backup-profile.md``)."""

    name: str
    roots: tuple[ProfileRoot, ...]
    include: tuple[str, ...]
    exclude: tuple[str, ...]
    retention: tuple[RetentionRule, ...]
    encrypt: bool = False
    name_prefix: str = ""
    source: str = "<profile>"
    selector: FileSelector = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "selector", FileSelector.from_patterns(self.include, self.exclude))

    def root(self, label: str) -> ProfileRoot:
        for r in self.roots:
            if r.label == label:
                return r
        raise ValueError(f"label: profile {self.name!r} has no root labelled {label!r}")

    def select(self, listing: Iterable[tuple[str, bool]]) -> list[str]:
        """:func:`select_files` with this profile's patterns (one root's listing)."""
        return select_files(listing, self.include, self.exclude)

    def document_name(self, root: ProfileRoot | str, relative_path: str) -> str:
        """``name_prefix/label/relative_path`` for a file under ``root`` (a root or its label)."""
        label = root.label if isinstance(root, ProfileRoot) else self.root(root).label
        check_relative_path(relative_path, param="relative_path")
        return "/".join(p for p in (self.name_prefix, label, relative_path) if p)

    def locate(self, document_name: str) -> tuple[ProfileRoot, str] | None:
        """The inverse of :meth:`document_name`, or None if the name is not this profile's."""
        rest = document_name
        if self.name_prefix:
            if not rest.startswith(self.name_prefix + "/"):
                return None
            rest = rest[len(self.name_prefix) + 1 :]
        label, sep, relative = rest.partition("/")
        if not sep or not relative:
            return None
        try:
            check_relative_path(relative)
        except ValueError:
            return None
        for r in self.roots:
            if r.label == label:
                return r, relative
        return None

    def owns(self, document_name: str) -> bool:
        return self.locate(document_name) is not None

    def plan_retention(self, versions: Sequence[VersionInfo], *, now: datetime) -> RetentionPlan:
        """Plan retention for this profile's documents, its patterns seeing root-relative paths.

        Every version must belong to the profile (filter with :meth:`owns`); anything else is a
        ``ValueError``, so that a profile can never plan the removal of another profile's data.
        """
        foreign = sorted({v.name for v in versions if not self.owns(v.name)})
        if foreign:
            raise ValueError(
                f"versions: {len(foreign)} document(s) do not belong to profile {self.name!r}, "
                f"e.g. {foreign[0]!r}"
            )

        def relative(name: str) -> str:
            located = self.locate(name)
            if located is None:  # unreachable: checked above
                raise ValueError(f"versions: {name!r} is not in profile {self.name!r}")
            return located[1]

        return plan_retention(versions, self.retention, now=now, match_key=relative)


# ---------------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------------

_TOP_KEYS = ("format_version", "name", "roots", "include", "exclude", "encrypt", "name_prefix")
_RULE_COUNT_KEYS = (
    "keep_last",
    "keep_hourly",
    "keep_daily",
    "keep_weekly",
    "keep_monthly",
    "keep_yearly",
)
_RULE_KEYS = ("pattern", "keep_all", *_RULE_COUNT_KEYS, "keep_within")


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, problem: str, where: str | None = None) -> ProfileError:
        return ProfileError(self.source, problem, where)

    def unknown_keys(self, table: Mapping[str, Any], allowed: Sequence[str], where: str) -> None:
        extra = sorted(set(table) - set(allowed))
        if extra:
            raise self.fail(
                f"unknown key {extra[0]!r} (allowed: {', '.join(allowed)})",
                f"{where}.{extra[0]}" if where else extra[0],
            )

    def string(self, value: object, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(f"must be a string, got {_toml_type(value)}", where)
        return value

    def patterns(self, value: object, where: str) -> tuple[str, ...]:
        if not isinstance(value, list):
            raise self.fail(f"must be a list of glob patterns, got {_toml_type(value)}", where)
        out: list[str] = []
        for i, item in enumerate(value, start=1):
            here = f"{where}[{i}]"
            pattern = self.string(item, here)
            if pattern.startswith("!"):
                raise self.fail(
                    f"{pattern!r}: '!' negation is not supported (exclude always wins over "
                    f"include); write '[!]...' for a name that starts with '!'",
                    here,
                )
            try:
                Glob.parse(pattern, param="pattern")
            except ValueError as exc:
                raise self.fail(str(exc).removeprefix("pattern: "), here) from None
            out.append(pattern)
        return tuple(out)

    def roots(self, value: object) -> tuple[ProfileRoot, ...]:
        if not isinstance(value, list) or not value:
            raise self.fail("must be a non-empty list of absolute directory paths", "roots")
        roots: list[ProfileRoot] = []
        for i, item in enumerate(value, start=1):
            here = f"roots[{i}]"
            label: str | None = None
            if isinstance(item, dict):
                self.unknown_keys(item, ("path", "label"), here)
                if "path" not in item:
                    raise self.fail("a root table needs a 'path'", here)
                path = self.string(item["path"], f"{here}.path")
                if "label" in item:
                    label = self.string(item["label"], f"{here}.label")
            else:
                path = self.string(item, here)
            pure = PurePath(path)
            if not pure.is_absolute():
                raise self.fail(f"must be an absolute directory path, got {path!r}", here)
            if label is None:
                label = pure.name
                if not label:
                    raise self.fail(
                        f"{path!r} has no basename to label its documents with; "
                        f'write {{ path = {path!r}, label = "..." }}',
                        here,
                    )
            if label in ("", ".", "..") or "/" in label or "\x00" in label:
                raise self.fail(
                    f"label {label!r} must be one non-empty name segment without '/'",
                    f"{here}.label",
                )
            for other in roots:
                if other.label == label:
                    raise self.fail(
                        f"label {label!r} is already used by root {other.path!r}; labels "
                        f"name the documents, so they must differ (give one a 'label')",
                        here,
                    )
                other_pure = PurePath(other.path)
                if pure.is_relative_to(other_pure) or other_pure.is_relative_to(pure):
                    raise self.fail(
                        f"{path!r} overlaps root {other.path!r}: its files would be deposited "
                        f"twice under two names",
                        here,
                    )
            roots.append(ProfileRoot(path=path, label=label))
        return tuple(roots)

    def rule(self, table: object, where: str) -> RetentionRule:
        if not isinstance(table, dict):
            raise self.fail(f"must be a table, got {_toml_type(table)}", where)
        self.unknown_keys(table, _RULE_KEYS, where)
        if "pattern" not in table:
            raise self.fail("a retention rule needs a 'pattern'", where)
        kwargs: dict[str, Any] = {"pattern": self.string(table["pattern"], f"{where}.pattern")}
        if "keep_all" in table:
            if not isinstance(table["keep_all"], bool):
                raise self.fail("must be true or false", f"{where}.keep_all")
            kwargs["keep_all"] = table["keep_all"]
        for key in _RULE_COUNT_KEYS:
            if key in table:
                count = table[key]
                if isinstance(count, bool) or not isinstance(count, int) or count < 1:
                    raise self.fail(f"must be an integer >= 1, got {count!r}", f"{where}.{key}")
                kwargs[key] = count
        if "keep_within" in table:
            text = self.string(table["keep_within"], f"{where}.keep_within")
            try:
                kwargs["keep_within"] = parse_duration(text, param="keep_within")
            except ValueError as exc:
                raise self.fail(
                    str(exc).removeprefix("keep_within "), f"{where}.keep_within"
                ) from None
        try:
            return RetentionRule(**kwargs)
        except ValueError as exc:
            raise self.fail(str(exc).removeprefix("pattern: "), where) from None

    def profile(self, doc: dict[str, Any]) -> BackupProfile:
        self.unknown_keys(doc, (*_TOP_KEYS, "retention"), "")
        version = doc.get("format_version", PROFILE_FORMAT_VERSION)
        if version != PROFILE_FORMAT_VERSION or isinstance(version, bool):
            raise self.fail(
                f"this evault reads profile format {PROFILE_FORMAT_VERSION}, got {version!r}",
                "format_version",
            )
        if "name" not in doc:
            raise self.fail("a profile needs a 'name'", "name")
        name = self.string(doc["name"], "name")
        if not _PROFILE_NAME_RE.fullmatch(name):
            raise self.fail(
                f"must be 1-64 letters, digits, '.', '_' or '-' (not starting with '.', '_' "
                f"or '-'), got {name!r}",
                "name",
            )
        if "roots" not in doc:
            raise self.fail("a profile needs 'roots', the directories to back up", "roots")
        roots = self.roots(doc["roots"])
        include: tuple[str, ...] = ()
        if "include" in doc:
            include = self.patterns(doc["include"], "include")
            if not include:
                raise self.fail(
                    "an empty list selects nothing; leave 'include' out to back up every file",
                    "include",
                )
        exclude = self.patterns(doc.get("exclude", []), "exclude")
        encrypt = doc.get("encrypt", False)
        if not isinstance(encrypt, bool):
            raise self.fail(f"must be true or false, got {encrypt!r}", "encrypt")
        prefix = self.string(doc.get("name_prefix", ""), "name_prefix").strip("/")
        if prefix:
            try:
                check_relative_path(prefix, param="name_prefix")
            except ValueError as exc:
                raise self.fail(str(exc).removeprefix("name_prefix: "), "name_prefix") from None
        rules_value = doc.get("retention", [])
        if not isinstance(rules_value, list):
            raise self.fail("must be an array of tables: [[retention]]", "retention")
        rules = tuple(self.rule(t, f"retention[{i}]") for i, t in enumerate(rules_value, start=1))
        return BackupProfile(
            name=name,
            roots=roots,
            include=include,
            exclude=exclude,
            retention=rules,
            encrypt=encrypt,
            name_prefix=prefix,
            source=self.source,
        )


def _toml_type(value: object) -> str:
    return {
        str: "a string",
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        list: "an array",
        dict: "a table",
    }.get(type(value), type(value).__name__)


def parse_profile(text: str | bytes, *, source: str = "<profile>") -> BackupProfile:
    """Parse and validate a profile; any problem is a :class:`ProfileError` naming the key.

    ``source`` (usually the file's path) is only used in messages.  ``bytes`` must be UTF-8.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProfileError(
                source, f"not UTF-8 text ({exc.reason} at byte {exc.start})"
            ) from None
    if not isinstance(text, str):
        raise TypeError(f"text must be str or bytes, got {type(text).__name__}")
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError(source, f"not valid TOML: {exc}") from None
    return _Parser(source).profile(doc)
