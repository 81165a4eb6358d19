"""Version retention: (versions, rules, now) -> which versions to keep, which to remove, and why.

A pure core in the manner of restic's ``forget`` policy (paper §2.3.2: "we might set up the profile
to maintain the 5 latest versions of any c source file, an unlimited number of versions of the file
my_last_will_and_testament but only the last version of the file todays_shopping_list").  Nothing
here reads a clock, a file or the network: the caller passes ``now`` and the versions, and gets back
a :class:`RetentionPlan` that a command prints (``--dry-run``) and then executes.

Globs
-----
Document names are ``/``-separated relative paths (``src/x/main.c``).  A pattern is matched with
:class:`Glob`, whose rules follow ``.gitignore`` because that is what users of backup tools already
know:

* ``*`` matches any run of characters except ``/``; ``?`` one character except ``/``; ``[abc]``,
  ``[a-z]`` and ``[!abc]`` a character class (never ``/``).  No backslash escapes: write ``[*]``
  for a literal ``*``, as with :mod:`fnmatch`.
* ``**`` as a whole segment matches zero or more segments: ``src/**/*.c``, ``**/test/*``;
  a trailing ``/**`` matches everything inside (``build/**``).  ``**`` inside a segment (``a**``)
  is refused, because its meaning differs between tools.
* A pattern without ``/`` matches the last segment (the basename) at any depth, so ``*.c`` matches
  ``main.c`` and ``src/x/main.c`` -- the paper's "any c source file".  A pattern with a ``/``
  anywhere but at its end is anchored and matched against the whole name; a leading ``/`` anchors a
  basename pattern to the top (``/notes.txt`` matches ``notes.txt`` only).
* A trailing ``/`` makes the pattern match directories only (used by backup profiles; meaningless
  for document names, so retention rules refuse it).
* Matching is case-sensitive everywhere, so a profile means the same thing on every platform.

Rules
-----
Rules are tried in the order given; the **first** rule whose pattern matches a document's name
governs all of that document's versions (so put specific rules before general ones, like a
firewall).  A document that no rule matches keeps every version: forgetting data is never a
default.  Within a rule, a version is kept if *any* of its clauses keeps it (restic's semantics):

* ``keep_all``: every version (the paper's "unlimited").
* ``keep_last=N``: the N newest versions; ``keep_last=1`` is the paper's "only the last version".
* ``keep_hourly/daily/weekly/monthly/yearly=N``: versions are put in calendar buckets by their
  deposit time in UTC (hour, day, ISO week, month, year); in each of the N newest buckets that hold
  a version, the newest version is kept.  Buckets that are empty do not count, so a pause in backups
  does not eat into the history (restic does the same).
* ``keep_within=D``: every version deposited at most D before ``now``.  Unlike restic, which
  measures from the newest snapshot, ``now`` is used, because a vault's versions are per document
  and "the newest version" would differ from document to document; the never-remove-latest rule
  below is what protects a document whose backups have stopped.

"Newer" means a higher version number: the vault numbers versions of a document in deposit order,
which a skewed clock cannot reorder.  Deposit times are used only for buckets and ``keep_within``.

The latest version is never removed
-----------------------------------
Whatever the rules say, the highest version of every document is kept.  Retention trims history;
it must never make a document disappear from the vault or leave it without its current content.
A time-only rule (``keep_within``) would otherwise delete every version of a file that has not
changed for longer than the window, which is exactly the file a backup exists to protect.  Deleting
a document is a separate, explicit act, never a side effect of a policy.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cached_property
from typing import Literal

__all__ = [
    "BUCKET_KINDS",
    "Glob",
    "RetentionPlan",
    "RetentionRule",
    "VersionDecision",
    "VersionInfo",
    "format_duration",
    "parse_duration",
    "plan_retention",
    "rules_summary",
]

# ---------------------------------------------------------------------------------------------
# Globs
# ---------------------------------------------------------------------------------------------


def _class_body(body: str) -> str:
    """A glob class body (without its brackets and '!') as a regex class body: ranges ``a-z``
    kept, every character escaped, so that nothing in it reads as a regex set operation
    (``--``, ``&&``, ``~~``, ``||``: a FutureWarning now, another meaning in a later Python) or
    a nested class.  A '-' first, last or right after a range is a literal, as in fnmatch."""

    def escaped(ch: str) -> str:
        return "\\" + ch if ch in "\\]^-[&~|" else ch

    items: list[str] = []
    k = 0
    while k < len(body):
        if k + 2 < len(body) and body[k + 1] == "-":
            items.append(f"{escaped(body[k])}-{escaped(body[k + 2])}")
            k += 3
        else:
            items.append(escaped(body[k]))
            k += 1
    return "".join(items)


def _segment_regex(segment: str, *, param: str, pattern: str) -> str:
    """Translate one ``/``-free glob segment into a regex that never matches ``/``."""
    out: list[str] = []
    i = 0
    n = len(segment)
    while i < n:
        c = segment[i]
        if c == "*":
            if i + 1 < n and segment[i + 1] == "*":
                raise ValueError(
                    f"{param}: '**' must be a whole path segment (as in 'a/**/b'), got {pattern!r}"
                )
            out.append("[^/]*")
            i += 1
        elif c == "?":
            out.append("[^/]")
            i += 1
        elif c == "[":
            j = i + 1
            if j < n and segment[j] in "!^":
                j += 1
            if j < n and segment[j] == "]":
                j += 1  # a ']' first in the class is a literal
            while j < n and segment[j] != "]":
                j += 1
            if j >= n:
                out.append(re.escape(c))  # no closing ']': a literal '[' as in fnmatch
                i += 1
                continue
            body = segment[i + 1 : j]
            negate = body[:1] in ("!", "^")
            if negate:
                body = body[1:]
            # A class must never match '/' even through a range such as '[+-0]'.
            out.append(f"(?:(?!/)[{'^' if negate else ''}{_class_body(body)}])")
            i = j + 1
        else:
            out.append(re.escape(c))
            i += 1
    return "".join(out)


@dataclass(frozen=True)
class Glob:
    """A compiled glob over ``/``-separated relative names (semantics in the module docstring)."""

    pattern: str
    anchored: bool
    dir_only: bool
    _regex: re.Pattern[str] = field(repr=False, compare=False)

    @classmethod
    def parse(cls, pattern: str, *, param: str = "pattern", allow_dir_only: bool = True) -> Glob:
        """Compile ``pattern``; a malformed one raises ``ValueError`` naming ``param``."""
        if not isinstance(pattern, str):
            raise TypeError(f"{param} must be a str, got {type(pattern).__name__}")
        if not pattern:
            raise ValueError(f"{param} must not be empty")
        if "\x00" in pattern:
            raise ValueError(f"{param} must not contain NUL, got {pattern!r}")
        body = pattern
        dir_only = body.endswith("/")
        if dir_only:
            if not allow_dir_only:
                raise ValueError(
                    f"{param}: a trailing '/' (directories only) makes no sense here, "
                    f"got {pattern!r}; to match everything under a directory write 'dir/**'"
                )
            body = body.rstrip("/")
        leading_slash = body.startswith("/")
        body = body.lstrip("/")
        if not body:
            raise ValueError(f"{param} must name something, got {pattern!r}")
        segments = body.split("/")
        for seg in segments:
            if seg in ("", ".", ".."):
                raise ValueError(
                    f"{param}: empty, '.' and '..' segments are not allowed, got {pattern!r}"
                )
        anchored = leading_slash or len(segments) > 1
        if not anchored:
            segments = ["**", *segments]
        # Collapse runs of '**': they mean the same as one.
        collapsed: list[str] = []
        for seg in segments:
            if seg == "**" and collapsed and collapsed[-1] == "**":
                continue
            collapsed.append(seg)
        parts: list[str] = []
        last = len(collapsed) - 1
        for idx, seg in enumerate(collapsed):
            if seg == "**":
                # Not last: zero or more whole segments, each with its '/'.  Last: everything
                # below (one or more characters, since names never end with '/').
                parts.append(".+" if idx == last else "(?:[^/]+/)*")
            else:
                parts.append(_segment_regex(seg, param=param, pattern=pattern))
                if idx != last:
                    parts.append("/")
        try:
            regex = re.compile("".join(parts), re.DOTALL)
        except re.error as exc:  # e.g. a reversed range such as '[z-a]'
            raise ValueError(f"{param}: not a valid glob ({exc}), got {pattern!r}") from None
        return cls(pattern=pattern, anchored=anchored, dir_only=dir_only, _regex=regex)

    def matches(self, name: str, *, is_dir: bool = False) -> bool:
        """True if ``name`` (a relative ``/``-separated path) matches.

        A directory-only pattern (trailing ``/``) matches only when ``is_dir`` is true.
        """
        if self.dir_only and not is_dir:
            return False
        return self._regex.fullmatch(name) is not None


# ---------------------------------------------------------------------------------------------
# Durations ("30d", "1w2d", "12h")
# ---------------------------------------------------------------------------------------------

_DURATION_UNITS: dict[str, timedelta] = {
    "w": timedelta(weeks=1),
    "d": timedelta(days=1),
    "h": timedelta(hours=1),
}
_DURATION_RE = re.compile(r"(?:(\d+)([wdh]))+")
_DURATION_PART = re.compile(r"(\d+)([wdh])")


def parse_duration(text: str, *, param: str = "duration") -> timedelta:
    """Parse ``"30d"``, ``"2w"``, ``"1d12h"`` (weeks, days, hours) into a positive timedelta.

    Months and years are refused on purpose: their length varies, and ``keep_monthly`` /
    ``keep_yearly`` already express calendar periods exactly.
    """
    if not isinstance(text, str):
        raise TypeError(f"{param} must be a str such as '30d', got {type(text).__name__}")
    if not _DURATION_RE.fullmatch(text):
        raise ValueError(
            f"{param} must be a duration such as '30d', '2w' or '1d12h' "
            f"(units w, d, h), got {text!r}"
        )
    total = timedelta()
    try:
        for amount, unit in _DURATION_PART.findall(text):
            total += int(amount) * _DURATION_UNITS[unit]
    except OverflowError:
        raise ValueError(
            f"{param} is too long (at most {timedelta.max.days} days), got {text!r}"
        ) from None
    if total <= timedelta():
        raise ValueError(f"{param} must be longer than zero, got {text!r}")
    return total


def format_duration(duration: timedelta) -> str:
    """The shortest ``w``/``d``/``h`` spelling of ``duration`` (with seconds if it has any)."""
    seconds = int(duration.total_seconds())
    out: list[str] = []
    for unit, size in (("w", 604800), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            out.append(f"{count}{unit}")
    return "".join(out) or "0s"


# ---------------------------------------------------------------------------------------------
# Rules
# ---------------------------------------------------------------------------------------------

BucketKind = Literal["hourly", "daily", "weekly", "monthly", "yearly"]
BUCKET_KINDS: tuple[BucketKind, ...] = ("hourly", "daily", "weekly", "monthly", "yearly")


def _bucket_label(kind: BucketKind, when: datetime) -> str:
    """The calendar period (UTC) that ``when`` falls in, as a sortable label."""
    # Zero-padded by hand (strftime does not pad years below 1000 on every platform), so that
    # the labels of one kind sort chronologically as strings.
    utc = when.astimezone(UTC)
    if kind == "hourly":
        return f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}T{utc.hour:02d}"
    if kind == "daily":
        return f"{utc.year:04d}-{utc.month:02d}-{utc.day:02d}"
    if kind == "weekly":
        iso = utc.isocalendar()
        return f"{iso.year:04d}-W{iso.week:02d}"
    if kind == "monthly":
        return f"{utc.year:04d}-{utc.month:02d}"
    return f"{utc.year:04d}"


def _check_count(value: int | None, param: str) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{param} must be an int or None, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{param} must be at least 1 (or None to leave it out), got {value}")


@dataclass(frozen=True)
class RetentionRule:
    """Which versions of the documents whose names match ``pattern`` to keep.

    At least one clause must be set.  ``keep_all`` cannot be combined with other clauses (it
    would make them meaningless).  Use :meth:`unlimited`, :meth:`last` and :meth:`only_latest`
    for the paper's three cases.
    """

    pattern: str
    keep_all: bool = False
    keep_last: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None
    keep_within: timedelta | None = None

    def __post_init__(self) -> None:
        # Parsing validates the pattern (ValueError naming 'pattern').
        Glob.parse(self.pattern, param="pattern", allow_dir_only=False)
        if not isinstance(self.keep_all, bool):
            raise TypeError(f"keep_all must be a bool, got {type(self.keep_all).__name__}")
        _check_count(self.keep_last, "keep_last")
        for kind in BUCKET_KINDS:
            _check_count(self.bucket_count(kind), f"keep_{kind}")
        if self.keep_within is not None:
            if not isinstance(self.keep_within, timedelta):
                got = type(self.keep_within).__name__
                raise TypeError(f"keep_within must be a timedelta or None, got {got}")
            if self.keep_within <= timedelta():
                raise ValueError(f"keep_within must be longer than zero, got {self.keep_within}")
        others = self.keep_last is not None or self.keep_within is not None
        others = others or any(self.bucket_count(k) is not None for k in BUCKET_KINDS)
        if self.keep_all and others:
            raise ValueError(
                f"keep_all keeps every version, so it cannot be combined with other keep_* "
                f"clauses (rule {self.pattern!r})"
            )
        if not self.keep_all and not others:
            raise ValueError(
                f"rule {self.pattern!r} keeps nothing: set keep_all, keep_last, keep_within or "
                f"one of keep_hourly/daily/weekly/monthly/yearly"
            )

    @classmethod
    def unlimited(cls, pattern: str) -> RetentionRule:
        """Keep every version (paper: "an unlimited number of versions")."""
        return cls(pattern, keep_all=True)

    @classmethod
    def last(cls, pattern: str, n: int) -> RetentionRule:
        """Keep the ``n`` newest versions (paper: "the 5 latest versions")."""
        return cls(pattern, keep_last=n)

    @classmethod
    def only_latest(cls, pattern: str) -> RetentionRule:
        """Keep only the newest version (paper: "only the last version"); same as ``last(p, 1)``."""
        return cls(pattern, keep_last=1)

    @cached_property
    def glob(self) -> Glob:
        return Glob.parse(self.pattern, param="pattern", allow_dir_only=False)

    def bucket_count(self, kind: BucketKind) -> int | None:
        value: int | None = getattr(self, f"keep_{kind}")
        return value

    def matches(self, name: str) -> bool:
        return self.glob.matches(name)

    def describe(self) -> str:
        """A short human summary: ``'*.c': last 5, daily 7``."""
        if self.keep_all:
            clauses = ["all versions"]
        else:
            clauses = []
            if self.keep_last is not None:
                clauses.append(f"last {self.keep_last}")
            for kind in BUCKET_KINDS:
                count = self.bucket_count(kind)
                if count is not None:
                    clauses.append(f"{kind} {count}")
            if self.keep_within is not None:
                clauses.append(f"within {format_duration(self.keep_within)}")
        return f"{self.pattern!r}: " + ", ".join(clauses)


# ---------------------------------------------------------------------------------------------
# Versions and plans
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VersionInfo:
    """One stored version of a document, as the vault lists it.

    ``version`` is the vault's version number (higher is newer); ``deposited_at`` must be
    timezone-aware; ``size`` is in bytes.
    """

    name: str
    version: int
    deposited_at: datetime
    size: int


@dataclass(frozen=True)
class VersionDecision:
    """The fate of one version, with every reason that applies (kept: why; removed: why not)."""

    version: VersionInfo
    keep: bool
    reasons: tuple[str, ...]
    rule: RetentionRule | None


@dataclass(frozen=True)
class RetentionPlan:
    """Every input version exactly once, sorted by (name, version)."""

    decisions: tuple[VersionDecision, ...]

    @property
    def kept(self) -> tuple[VersionInfo, ...]:
        return tuple(d.version for d in self.decisions if d.keep)

    @property
    def removed(self) -> tuple[VersionInfo, ...]:
        return tuple(d.version for d in self.decisions if not d.keep)

    @property
    def removed_bytes(self) -> int:
        return sum(v.size for v in self.removed)

    def for_document(self, name: str) -> tuple[VersionDecision, ...]:
        return tuple(d for d in self.decisions if d.version.name == name)


def _check_versions(versions: Sequence[VersionInfo]) -> None:
    seen: set[tuple[str, int]] = set()
    for v in versions:
        if not isinstance(v, VersionInfo):
            raise TypeError(f"versions must hold VersionInfo, got {type(v).__name__}")
        if not isinstance(v.name, str) or not v.name:
            raise ValueError(f"versions: a document name must be a non-empty str, got {v.name!r}")
        if isinstance(v.version, bool) or not isinstance(v.version, int) or v.version < 0:
            raise ValueError(
                f"versions: version of {v.name!r} must be an int >= 0, got {v.version!r}"
            )
        if not isinstance(v.deposited_at, datetime) or v.deposited_at.utcoffset() is None:
            raise ValueError(
                f"versions: deposited_at of {v.name!r} v{v.version} must be a timezone-aware "
                f"datetime, got {v.deposited_at!r}"
            )
        if isinstance(v.size, bool) or not isinstance(v.size, int) or v.size < 0:
            raise ValueError(f"versions: size of {v.name!r} v{v.version} must be an int >= 0")
        key = (v.name, v.version)
        if key in seen:
            raise ValueError(f"versions: {v.name!r} version {v.version} is listed twice")
        seen.add(key)


def _plan_document(
    newest_first: list[VersionInfo], rule: RetentionRule | None, now: datetime
) -> list[VersionDecision]:
    """Decide one document's versions (``newest_first`` sorted by version, descending)."""
    keep_reasons: dict[int, list[str]] = defaultdict(list)
    drop_reasons: dict[int, list[str]] = defaultdict(list)
    latest = newest_first[0].version
    keep_reasons[latest].append("latest version: never removed")

    if rule is None:
        for v in newest_first:
            keep_reasons[v.version].append("no rule matches: kept (default)")
    elif rule.keep_all:
        for v in newest_first:
            keep_reasons[v.version].append(f"all versions kept by rule {rule.pattern!r}")
    else:
        p = rule.pattern
        if rule.keep_last is not None:
            n = rule.keep_last
            for i, v in enumerate(newest_first):
                if i < n:
                    keep_reasons[v.version].append(f"last {n} of rule {p!r}")
                else:
                    drop_reasons[v.version].append(f"beyond last {n} of rule {p!r}")
        for kind in BUCKET_KINDS:
            count = rule.bucket_count(kind)
            if count is None:
                continue
            buckets: dict[str, list[VersionInfo]] = defaultdict(list)
            for v in newest_first:
                buckets[_bucket_label(kind, v.deposited_at)].append(v)
            # Labels sort chronologically (zero-padded ISO forms), so the newest come first.
            for rank, label in enumerate(sorted(buckets, reverse=True)):
                members = buckets[label]  # still newest first
                if rank < count:
                    keep_reasons[members[0].version].append(f"{kind} bucket {label} of rule {p!r}")
                    for v in members[1:]:
                        drop_reasons[v.version].append(
                            f"{kind} bucket {label} keeps a newer version"
                        )
                else:
                    for v in members:
                        drop_reasons[v.version].append(
                            f"{kind} bucket {label} is beyond the newest {count} "
                            f"{kind} buckets of rule {p!r}"
                        )
        if rule.keep_within is not None:
            window = format_duration(rule.keep_within)
            try:
                cutoff: datetime | None = now - rule.keep_within
            except OverflowError:  # the window reaches before year 1: everything is inside
                cutoff = None
            for v in newest_first:
                if cutoff is None or v.deposited_at >= cutoff:
                    keep_reasons[v.version].append(f"within {window} of now (rule {p!r})")
                else:
                    drop_reasons[v.version].append(
                        f"deposited more than {window} before now (rule {p!r})"
                    )

    decisions: list[VersionDecision] = []
    for v in reversed(newest_first):
        kept = keep_reasons.get(v.version)
        if kept:
            decisions.append(VersionDecision(v, True, tuple(kept), rule))
        else:
            decisions.append(VersionDecision(v, False, tuple(drop_reasons[v.version]), rule))
    return decisions


def plan_retention(
    versions: Sequence[VersionInfo],
    rules: Sequence[RetentionRule],
    *,
    now: datetime,
    match_key: Callable[[str], str] | None = None,
) -> RetentionPlan:
    """Decide, for every version, whether it is kept or removed, and why.

    ``rules`` are tried in order and the first whose pattern matches a document governs it.
    ``match_key`` maps a document name to the string the patterns are matched against (a backup
    profile passes one that strips its name prefix, so that its patterns read like its include
    and exclude globs); by default the name itself.  ``now`` must be timezone-aware; it is
    only used by ``keep_within``.  The result does not depend on the order of ``versions``.
    """
    if not isinstance(now, datetime) or now.utcoffset() is None:
        raise ValueError(f"now must be a timezone-aware datetime, got {now!r}")
    for r in rules:
        if not isinstance(r, RetentionRule):
            raise TypeError(f"rules must hold RetentionRule, got {type(r).__name__}")
    _check_versions(versions)

    by_name: dict[str, list[VersionInfo]] = defaultdict(list)
    for v in versions:
        by_name[v.name].append(v)

    decisions: list[VersionDecision] = []
    for name in sorted(by_name):
        key = name if match_key is None else match_key(name)
        rule = next((r for r in rules if r.matches(key)), None)
        newest_first = sorted(by_name[name], key=lambda v: v.version, reverse=True)
        decisions.extend(_plan_document(newest_first, rule, now))
    return RetentionPlan(tuple(decisions))


def rules_summary(rules: Iterable[RetentionRule]) -> list[str]:
    """One line per rule, in matching order, for ``--dry-run`` output."""
    return [f"{i}. {r.describe()}" for i, r in enumerate(rules, start=1)]
