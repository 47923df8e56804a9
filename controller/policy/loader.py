"""The policy directory as one set: load it, check it, pick a policy from it, reload it.

contracts.md section 2: every `*.yaml`/`*.yml` file directly in the directory (sorted; hidden
entries such as a ConfigMap's `..data` skipped; symlinks followed), each holding any number of
YAML documents with the common envelope. The set is validated whole, cross-references included,
and **a set with any error is refused whole**: the controller keeps the last good set, the check
command exits 1. Every error is a `PolicyError` printed as

    path:line: field.path: what is wrong (got X; expected Y)

Checks, in order: readable UTF-8 files; YAML syntax and duplicate keys; each document against the
pydantic models (unknown fields, types, ranges, min <= max, cron, timezone, durations); duplicate
(kind, name); references (ClusterProfile.spec.scalingPolicy, AccessPolicy rules' profiles);
ScalingPolicies at one priority whose selectors can match the same group; schedule windows that
never open or contradict the policy's bounds; PromQL with unbalanced brackets or an outermost
aggregation that drops the mapping labels (`controller.keys.METRIC_MAPPING_LABELS`).

Which policy applies to a group (`PolicySet.scaling_policy_for`, rule in `selection`): the
cluster's `rayops.io/policy` annotation names it; otherwise the matching policy with the highest
`priority`; a tie is `Ambiguous` and nothing applies; a name that does not exist is
`UnknownPolicy` and nothing applies.

Hot reload (`PolicyStore`): `reload()` every tick costs a directory listing and a stat per file
while nothing changed; a changed valid set replaces the current one at once; an invalid one is
refused, the last good set stays, and the result says "newly invalid" once and "recovered" once, so
the caller raises one alert per incident, not one per tick.
"""

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from controller.policy.check import (
    Declared,
    Loaded,
    dangling_references,
    duplicate_names,
    overlapping_selectors,
    policy_checks,
)
from controller.policy.errors import PolicyError, PolicySetInvalid
from controller.policy.model import AccessPolicy, ClusterProfile, ScalingPolicy
from controller.policy.selection import Ambiguous, Selection, UnknownPolicy, select_policy
from controller.policy.source import (
    Fingerprint,
    ParsedDocument,
    SourceFile,
    decode,
    fingerprint,
    parse_documents,
    read_directory,
)
from controller.policy.validate import DocumentModel, validate_document

__all__ = [
    "Ambiguous",
    "CheckResult",
    "PolicyError",
    "PolicySet",
    "PolicySetInvalid",
    "PolicyStore",
    "ReloadResult",
    "ReloadStatus",
    "Selection",
    "SourceRef",
    "UnknownPolicy",
    "check_directory",
    "load_policy_set",
    "validate_sources",
]


@dataclass(frozen=True)
class SourceRef:
    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass(frozen=True)
class PolicySet:
    """A valid, immutable set of documents. Share it freely between threads; a reload makes a new one.

    `revision` is a hash of the files' names and contents: it changes exactly when the set might
    have, and it is what decisions record as "policy revision".
    """

    directory: str
    revision: str
    scaling_policies: Mapping[str, ScalingPolicy] = field(default_factory=lambda: MappingProxyType({}))
    cluster_profiles: Mapping[str, ClusterProfile] = field(default_factory=lambda: MappingProxyType({}))
    access_policies: Mapping[str, AccessPolicy] = field(default_factory=lambda: MappingProxyType({}))
    sources: Mapping[tuple[str, str], SourceRef] = field(default_factory=lambda: MappingProxyType({}))
    warnings: tuple[PolicyError, ...] = ()

    @property
    def documents(self) -> tuple[DocumentModel, ...]:
        return (
            *self.scaling_policies.values(),
            *self.cluster_profiles.values(),
            *self.access_policies.values(),
        )

    def __len__(self) -> int:
        return len(self.scaling_policies) + len(self.cluster_profiles) + len(self.access_policies)

    def source_of(self, kind: str, name: str) -> SourceRef | None:
        return self.sources.get((kind, name))

    def scaling_policy_for(
        self,
        namespace: str,
        cluster: str,
        labels: Mapping[str, str] | None,
        annotations: Mapping[str, str] | None,
        group: str,
    ) -> Selection:
        """The ScalingPolicy for one group, `Ambiguous`/`UnknownPolicy` (nothing applies; `.reason`
        says why) or None (no policy matches). The rule is in `controller.policy.selection`."""
        return select_policy(
            self.scaling_policies.values(), namespace, cluster, labels or {}, annotations or {}, group
        )


@dataclass(frozen=True)
class CheckResult:
    """Everything one check of a directory found; `policy_set` only when there is no error."""

    directory: str
    files: int
    documents: int
    errors: tuple[PolicyError, ...]
    warnings: tuple[PolicyError, ...]
    policy_set: PolicySet | None

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def files_with_errors(self) -> int:
        return len({e.path for e in self.errors})


def revision_of(files: Sequence[SourceFile]) -> str:
    h = hashlib.sha256()
    for f in sorted(files, key=lambda f: f.path):
        h.update(os.path.basename(f.path).encode() + b"\0" + f.data + b"\0")
    return h.hexdigest()[:16]


def _declared(doc: ParsedDocument) -> Declared | None:
    v = doc.value
    if not isinstance(v, dict):
        return None
    meta = v.get("metadata")
    kind, name = v.get("kind"), meta.get("name") if isinstance(meta, dict) else None
    return Declared(kind, name, doc) if isinstance(kind, str) and isinstance(name, str) else None


def validate_sources(
    directory: str, files: Sequence[SourceFile], read_errors: Sequence[PolicyError] = ()
) -> CheckResult:
    """Check file contents already read (pure: no I/O), so the store can read once and retry."""
    errors: list[PolicyError] = list(read_errors)
    warnings: list[PolicyError] = []
    complete = not read_errors  # every file parsed: only then can a reference be called dangling
    parsed: list[ParsedDocument] = []
    for f in files:
        text, err = decode(f)
        if text is None:
            if err is not None:
                errors.append(err)
            complete = False
            continue
        docs, problems = parse_documents(f.path, text)
        complete = complete and not any(p.field == "yaml" for p in problems)
        errors += problems
        parsed += docs
    declared: list[Declared] = []
    loaded: list[Loaded] = []
    for d in parsed:
        decl = _declared(d)
        if decl is not None:
            declared.append(decl)
        model, problems = validate_document(d)
        errors += problems
        if model is not None:
            loaded.append(Loaded(model, d))
        for problem in policy_checks(d, model):
            (warnings if problem.severity == "warning" else errors).append(problem)
    errors += duplicate_names(declared)
    if complete:
        errors += dangling_references(loaded, declared)
    errors += overlapping_selectors([item for item in loaded if item.doc.kind == "ScalingPolicy"])
    errors.sort()
    warnings.sort()
    policy_set = None if errors else _build_set(directory, files, loaded, warnings)
    return CheckResult(directory, len(files), len(parsed), tuple(errors), tuple(warnings), policy_set)


def _build_set(
    directory: str, files: Sequence[SourceFile], loaded: Sequence[Loaded], warnings: Sequence[PolicyError]
) -> PolicySet:
    scaling: dict[str, ScalingPolicy] = {}
    profiles: dict[str, ClusterProfile] = {}
    access: dict[str, AccessPolicy] = {}
    sources: dict[tuple[str, str], SourceRef] = {}
    for item in loaded:
        doc = item.doc
        if isinstance(doc, ScalingPolicy):
            scaling[doc.name] = doc
        elif isinstance(doc, ClusterProfile):
            profiles[doc.name] = doc
        else:
            access[doc.name] = doc
        sources[(doc.kind, doc.name)] = SourceRef(item.source.path, item.source.line)
    return PolicySet(
        directory,
        revision_of(files),
        MappingProxyType(scaling),
        MappingProxyType(profiles),
        MappingProxyType(access),
        MappingProxyType(sources),
        tuple(warnings),
    )


def check_directory(directory: str) -> CheckResult:
    """Read and check a directory; never raises for bad input (errors are in the result)."""
    files, read_errors = read_directory(directory)
    return validate_sources(directory, files, read_errors)


def load_policy_set(directory: str) -> PolicySet:
    """The directory's valid set; raises PolicySetInvalid with every error otherwise."""
    result = check_directory(directory)
    if result.policy_set is None:
        raise PolicySetInvalid(result.errors)
    return result.policy_set


# --- Hot reload --------------------------------------------------------------------------------------


class ReloadStatus(StrEnum):
    LOADED = "loaded"  # a new valid set is now current
    UNCHANGED = "unchanged"  # nothing to do: same files, or same contents as the current set
    REFUSED = "refused"  # the directory's set is invalid; the last good set (if any) stays


@dataclass(frozen=True)
class ReloadResult:
    """What one `PolicyStore.reload()` did, as values the caller turns into events.

    `newly_invalid` is true on the first refusal after a good state (or at start-up): raise the
    "policy invalid" alert then, and only then. `recovered` is true on the first good load after
    refusals: clear the alert. `errors` are the current problems whenever the directory is invalid,
    even on UNCHANGED, so a status page can always show them.
    """

    status: ReloadStatus
    current: PolicySet | None
    errors: tuple[PolicyError, ...] = ()
    newly_invalid: bool = False
    recovered: bool = False

    @property
    def changed(self) -> bool:
        return self.status is ReloadStatus.LOADED


class PolicyStore:
    """The last good PolicySet of one directory, refreshed by `reload()` (call it every tick).

    Thread-safe: reloads are serialised; `current` is replaced atomically and is itself immutable.
    """

    _READ_ATTEMPTS = 3

    def __init__(self, directory: str) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._current: PolicySet | None = None
        self._errors: tuple[PolicyError, ...] = ()
        self._invalid = False
        self._fingerprint: Fingerprint | str | None = None

    @property
    def current(self) -> PolicySet | None:
        """The set in force: the last valid one loaded, or None before any was."""
        return self._current

    @property
    def errors(self) -> tuple[PolicyError, ...]:
        """Why the directory is refused now; empty while it is valid."""
        return self._errors

    @property
    def invalid(self) -> bool:
        return self._invalid

    def _fp(self) -> Fingerprint | str:
        try:
            return fingerprint(self.directory)
        except OSError as e:
            return f"unreadable: {e}"

    def reload(self, force: bool = False) -> ReloadResult:
        with self._lock:
            fp = self._fp()
            if not force and fp == self._fingerprint:
                return ReloadResult(ReloadStatus.UNCHANGED, self._current, self._errors)
            # Read until the fingerprint holds still around the read, so a ConfigMap swap in the
            # middle cannot produce a mix of old and new files.
            for _ in range(self._READ_ATTEMPTS):
                files, read_errors = read_directory(self.directory)
                after = self._fp()
                if after == fp:
                    break
                fp = after
            result = validate_sources(self.directory, files, read_errors)
            self._fingerprint = fp
            if result.policy_set is None:
                newly = not self._invalid
                self._invalid, self._errors = True, result.errors
                return ReloadResult(ReloadStatus.REFUSED, self._current, result.errors, newly_invalid=newly)
            recovered = self._invalid
            self._invalid, self._errors = False, ()
            if self._current is not None and result.policy_set.revision == self._current.revision:
                return ReloadResult(ReloadStatus.UNCHANGED, self._current, recovered=recovered)
            self._current = result.policy_set
            return ReloadResult(ReloadStatus.LOADED, self._current, recovered=recovered)
