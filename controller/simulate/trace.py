"""Demand traces for `rayops simulate` (contracts.md section 8): the CSV format and the Azure LLM format.

A trace is a list of tasks (arrival time, duration, CPUs, GPUs) plus the window it covers. Everything the
simulator replays goes through `Trace`, whatever its source (a CSV file, the Azure LLM inference format,
a synthetic generator, Prometheus history), so the engine and the baselines see one shape.

Input errors are `TraceError`s naming the 1-based line of the file and what is wrong with it, because a
trace with a bad row is a user's mistake to fix, not a crash to debug.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

#: Wall-clock time of t=0 for traces whose timestamps are seconds from the start (a Monday, 00:00 UTC),
#: so policies with schedules see a well-defined time of day.
NUMERIC_EPOCH = datetime(2024, 1, 1, tzinfo=UTC)

#: A cap on the tasks one trace may expand to, so a typo (`tasks` = 10^9) is an error, not an OOM.
MAX_TASKS = 5_000_000

CSV_COLUMNS = ("timestamp", "tasks", "duration_s")
CSV_OPTIONAL = ("cpus", "gpus")
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
_AZURE_TS = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?$")


class SimulationInputError(Exception):
    """Any input problem the user must fix (trace, policy file, Prometheus history, flags).

    The command line prints `str(error)` as one line and exits 1: no traceback for input errors.
    """


class TraceError(SimulationInputError):
    """A trace that cannot be read, naming the 1-based line (`row`) of the file and what is wrong."""

    def __init__(self, row: int | None, message: str, source: str = "trace") -> None:
        self.row = row
        self.message = message
        self.source = source
        where = f"{source}, line {row}" if row is not None else source
        super().__init__(f"{where}: {message}")


@dataclass(frozen=True, slots=True)
class Task:
    """One unit of work: arrives at `arrival_s` (seconds from the trace's start), runs `duration_s`."""

    arrival_s: float
    duration_s: float
    cpus: float = 1.0
    gpus: float = 0.0
    row: int = 0  # the line of the trace it came from, for messages


@dataclass(frozen=True)
class AzureDurationModel:
    """How long one Azure LLM request keeps a worker busy: `base_s + per_context_token_s * ContextTokens +
    per_generated_token_s * GeneratedTokens`.

    The trace has token counts, not durations. The defaults model one request at a time per worker:
    0.5 s of fixed overhead (queueing in the server, tokenisation, network), prefill at 2,000 tokens/s
    (0.5 ms per context token) and decoding at 20 tokens/s (50 ms per generated token), in the range
    Splitwise reports for a single request on one accelerator. On the code trace this gives a median of
    about 2.2 s and a mean of about 2.9 s per request. Change them with `--azure-model A,B,C`.
    """

    base_s: float = 0.5
    per_context_token_s: float = 0.0005
    per_generated_token_s: float = 0.05

    def duration(self, context_tokens: int, generated_tokens: int) -> float:
        return (
            self.base_s
            + self.per_context_token_s * context_tokens
            + self.per_generated_token_s * generated_tokens
        )

    def describe(self) -> str:
        return (
            f"duration_s = {self.base_s:g} + {self.per_context_token_s:g} * ContextTokens"
            f" + {self.per_generated_token_s:g} * GeneratedTokens"
        )

    @staticmethod
    def parse(text: str) -> AzureDurationModel:
        """Parse `A,B,C` (seconds, seconds per context token, seconds per generated token)."""
        parts = text.split(",")
        try:
            values = [float(p) for p in parts]
        except ValueError:
            values = []
        if len(values) != 3 or any(not math.isfinite(v) or v < 0 for v in values) or sum(values) <= 0:
            raise SimulationInputError(
                f"--azure-model '{text}': expected three non-negative numbers A,B,C "
                "(seconds, seconds per context token, seconds per generated token), not all 0"
            )
        return AzureDurationModel(values[0], values[1], values[2])


@dataclass(frozen=True)
class Trace:
    """Tasks in arrival order and the window `[0, end_s]` the trace covers.

    `end_s` is where cost accounting stops for a run that has served everything: the latest
    `timestamp + duration_s` of any row (a row with 0 tasks extends the window, so a trace can include
    a quiet tail), or the end of a Prometheus range.
    """

    name: str
    tasks: tuple[Task, ...]
    end_s: float
    start: datetime = NUMERIC_EPOCH
    source: str = "csv"
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def has_gpus(self) -> bool:
        return any(t.gpus > 0 for t in self.tasks)

    @property
    def span_hours(self) -> float:
        return self.end_s / 3600.0


def read_trace(
    path: str | Path, azure_model: AzureDurationModel | None = None, name: str | None = None
) -> Trace:
    """Read a trace file in either format (chosen by its header)."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise TraceError(None, f"cannot read: {e.strerror or e}", source=str(p)) from e
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise TraceError(line, "not UTF-8 text", source=str(p)) from e
    return parse_trace(text, source=str(p), azure_model=azure_model, name=name or p.stem)


def parse_trace(
    text: str, source: str = "trace", azure_model: AzureDurationModel | None = None, name: str = "trace"
) -> Trace:
    rows = _rows(text.removeprefix("\ufeff"), source)
    try:
        line, header = next(rows)
    except StopIteration:
        raise TraceError(
            1, f"empty file; expected the header {','.join(CSV_COLUMNS)}[,cpus][,gpus]", source
        ) from None
    cols = [h.strip() for h in header]
    if tuple(cols) == AZURE_COLUMNS:
        return _parse_azure(rows, source, azure_model or AzureDurationModel(), name)
    return _parse_csv(cols, line, rows, source, name)


def _rows(text: str, source: str) -> Iterator[tuple[int, list[str]]]:
    """CSV records with their 1-based line numbers, skipping blank lines."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        for rec in reader:
            if rec and any(c.strip() for c in rec):
                yield reader.line_num, rec
    except csv.Error as e:
        raise TraceError(reader.line_num, f"malformed CSV: {e}", source) from e


def _parse_csv(
    cols: list[str], header_line: int, rows: Iterator[tuple[int, list[str]]], source: str, name: str
) -> Trace:
    allowed = CSV_COLUMNS + CSV_OPTIONAL
    expected = f"{','.join(CSV_COLUMNS)}[,cpus][,gpus] or {','.join(AZURE_COLUMNS)}"
    unknown = [c for c in cols if c not in allowed]
    missing = [c for c in CSV_COLUMNS if c not in cols]
    dupes = sorted({c for c in cols if cols.count(c) > 1})
    if unknown or missing or dupes:
        what = (
            f"unknown column(s) {', '.join(repr(c) for c in unknown)}"
            if unknown
            else f"missing column(s) {', '.join(missing)}"
            if missing
            else f"duplicate column(s) {', '.join(dupes)}"
        )
        raise TraceError(header_line, f"bad header: {what}; expected {expected}", source)
    idx = {c: i for i, c in enumerate(cols)}
    tasks: list[Task] = []
    iso_start: datetime | None = None
    kind: str | None = None  # "seconds" or "iso"
    prev = -math.inf
    end = 0.0
    for line, rec in rows:
        if len(rec) != len(cols):
            raise TraceError(line, f"has {len(rec)} fields, the header has {len(cols)}", source)

        def cell(c: str, rec: list[str] = rec) -> str:
            return rec[idx[c]].strip() if c in idx else ""

        ts_text = cell("timestamp")
        ts_kind, value = _timestamp(ts_text, line, source)
        if kind is None:
            kind = ts_kind
        elif kind != ts_kind:
            first = "seconds from the start" if kind == "seconds" else "ISO 8601"
            raise TraceError(
                line, f"timestamp '{ts_text}' mixes formats: earlier rows use {first}; use one kind", source
            )
        if isinstance(value, datetime):
            if iso_start is None:
                iso_start = value
            t = (value - iso_start).total_seconds()
        else:
            t = value
        if t < prev:
            raise TraceError(
                line,
                f"timestamp '{ts_text}' is earlier than the row before (rows must be in time order)",
                source,
            )
        prev = t
        count = _whole(cell("tasks"), "tasks", line, source)
        duration = _number(cell("duration_s"), "duration_s", line, source, positive=True)
        cpus = _number(cell("cpus") or "1", "cpus", line, source)
        gpus = _number(cell("gpus") or "0", "gpus", line, source)
        if cpus == 0 and gpus == 0:
            raise TraceError(line, "a task must need some CPUs or GPUs (cpus and gpus are both 0)", source)
        if len(tasks) + count > MAX_TASKS:
            raise TraceError(line, f"the trace expands to more than {MAX_TASKS:,} tasks", source)
        tasks.extend(Task(t, duration, cpus, gpus, line) for _ in range(count))
        end = max(end, t + duration)
    if kind is None:
        raise TraceError(header_line, "no data rows after the header", source)
    start = iso_start if iso_start is not None else NUMERIC_EPOCH
    return Trace(name=name, tasks=tuple(tasks), end_s=end, start=start, source="csv")


def _parse_azure(
    rows: Iterator[tuple[int, list[str]]], source: str, model: AzureDurationModel, name: str
) -> Trace:
    tasks: list[Task] = []
    first: datetime | None = None
    prev = -math.inf
    end = 0.0
    for line, rec in rows:
        if len(rec) != 3:
            raise TraceError(line, f"has {len(rec)} fields, the Azure header has 3", source)
        ts = _azure_timestamp(rec[0].strip(), line, source)
        if first is None:
            first = ts
        t = (ts - first).total_seconds()
        if t < prev:
            raise TraceError(line, f"TIMESTAMP '{rec[0].strip()}' is earlier than the row before", source)
        prev = t
        ctx = _whole(rec[1].strip(), "ContextTokens", line, source)
        gen = _whole(rec[2].strip(), "GeneratedTokens", line, source)
        duration = model.duration(ctx, gen)
        if duration <= 0:
            raise TraceError(line, "the duration model gives 0 s for this request", source)
        tasks.append(Task(t, duration, 1.0, 0.0, line))
        end = max(end, t + duration)
    if first is None:
        raise TraceError(1, "no data rows after the header", source)
    note = f"Azure LLM format: one 1-CPU task per request, {model.describe()}"
    return Trace(name=name, tasks=tuple(tasks), end_s=end, start=first, source="azure", notes=(note,))


def _timestamp(text: str, line: int, source: str) -> tuple[str, float | datetime]:
    if not text:
        raise TraceError(line, "timestamp is empty", source)
    try:
        v = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(v) or v < 0:
            raise TraceError(line, f"timestamp '{text}' must be a finite number of seconds >= 0", source)
        return "seconds", v
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise TraceError(
            line,
            f"timestamp '{text}' is neither seconds from the start nor ISO 8601 (e.g. 2024-05-01T12:00:00Z)",
            source,
        ) from None
    return "iso", dt if dt.tzinfo else dt.replace(tzinfo=UTC)


def _azure_timestamp(text: str, line: int, source: str) -> datetime:
    """`2023-11-16 18:17:03.9799600`: 7 fractional digits, which `strptime`'s `%f` cannot take."""
    m = _AZURE_TS.match(text)
    if not m:
        raise TraceError(line, f"TIMESTAMP '{text}' is not like 2023-11-16 18:17:03.9799600", source)
    date, hh, mm, ss, frac = m.groups()
    try:
        dt = datetime.fromisoformat(f"{date}T{hh}:{mm}:{ss}").replace(tzinfo=UTC)
    except ValueError:
        raise TraceError(line, f"TIMESTAMP '{text}' is not a valid date and time", source) from None
    if frac:
        dt += timedelta(seconds=float("0." + frac))
    return dt


def _number(text: str, column: str, line: int, source: str, positive: bool = False) -> float:
    try:
        v = float(text)
    except ValueError:
        raise TraceError(line, f"{column} '{text}' is not a number", source) from None
    if not math.isfinite(v) or v < 0 or (positive and v == 0):
        bound = "> 0" if positive else ">= 0"
        raise TraceError(line, f"{column} '{text}' must be a finite number {bound}", source)
    return v


def _whole(text: str, column: str, line: int, source: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise TraceError(line, f"{column} '{text}' is not a whole number", source) from None
    if v < 0:
        raise TraceError(line, f"{column} '{text}' must be >= 0", source)
    return v
