"""Reading traces: the CSV format, ISO timestamps, the Azure LLM format, and errors naming the line."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest

from controller.simulate.synthetic import GENERATORS, to_csv
from controller.simulate.trace import (
    NUMERIC_EPOCH,
    AzureDurationModel,
    SimulationInputError,
    TraceError,
    parse_trace,
    read_trace,
)
from tests.simulate.helpers import AZURE


def test_csv_rows_expand_to_tasks_with_defaults_and_optional_columns() -> None:
    t = parse_trace("timestamp,tasks,duration_s,cpus,gpus\n0,2,60,,\n10.5,1,5,0.5,1\n12,0,100,,\n")
    assert [(x.arrival_s, x.duration_s, x.cpus, x.gpus, x.row) for x in t.tasks] == [
        (0.0, 60.0, 1.0, 0.0, 2),
        (0.0, 60.0, 1.0, 0.0, 2),
        (10.5, 5.0, 0.5, 1.0, 3),
    ]
    assert t.end_s == 112.0  # the 0-task row at 12 s lasting 100 s keeps the window open
    assert t.start == NUMERIC_EPOCH
    assert t.has_gpus


def test_columns_in_any_order_blank_lines_crlf_and_bom() -> None:
    t = parse_trace("\ufeffduration_s,timestamp,tasks\r\n30,0,1\r\n\r\n30,5,2")
    assert [(x.arrival_s, x.duration_s) for x in t.tasks] == [(0.0, 30.0), (5.0, 30.0), (5.0, 30.0)]


def test_iso_timestamps_are_seconds_from_the_first_row() -> None:
    t = parse_trace(
        "timestamp,tasks,duration_s\n2024-05-01T12:00:00Z,1,10\n2024-05-01T12:01:30+00:00,1,10\n"
        "2024-05-01T14:05:00+02:00,1,10\n"
    )
    assert t.start == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    # 14:05+02:00 is 12:05 UTC: zones are honoured
    assert [x.arrival_s for x in t.tasks] == [0.0, 90.0, 300.0]
    assert t.end_s == 310.0


def test_naive_iso_timestamps_are_utc() -> None:
    t = parse_trace("timestamp,tasks,duration_s\n2024-05-01 12:00:00,1,10\n2024-05-01 12:00:10,1,1\n")
    assert t.start == datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    assert [x.arrival_s for x in t.tasks] == [0.0, 10.0]


@pytest.mark.parametrize(
    ("text", "line", "what"),
    [
        ("", 1, "empty file"),
        ("time,tasks,duration_s\n0,1,1\n", 1, "unknown column(s) 'time'"),
        ("timestamp,tasks\n0,1\n", 1, "missing column(s) duration_s"),
        ("timestamp,tasks,duration_s,cpus,cpus\n", 1, "duplicate column(s) cpus"),
        ("timestamp,tasks,duration_s\n", 1, "no data rows"),
        ("timestamp,tasks,duration_s\n0,1,5\n1,2\n", 3, "has 2 fields, the header has 3"),
        ("timestamp,tasks,duration_s\n0,1,5\n1,two,5\n", 3, "tasks 'two' is not a whole number"),
        ("timestamp,tasks,duration_s\n0,1.5,5\n", 2, "tasks '1.5' is not a whole number"),
        ("timestamp,tasks,duration_s\n0,-1,5\n", 2, "tasks '-1' must be >= 0"),
        ("timestamp,tasks,duration_s\n0,1,0\n", 2, "duration_s '0' must be a finite number > 0"),
        ("timestamp,tasks,duration_s\n0,1,nan\n", 2, "duration_s 'nan' must be a finite number > 0"),
        ("timestamp,tasks,duration_s\n0,1,abc\n", 2, "duration_s 'abc' is not a number"),
        ("timestamp,tasks,duration_s,cpus\n0,1,5,-2\n", 2, "cpus '-2' must be a finite number >= 0"),
        ("timestamp,tasks,duration_s,cpus,gpus\n0,1,5,0,0\n", 2, "cpus and gpus are both 0"),
        ("timestamp,tasks,duration_s\n-1,1,5\n", 2, "timestamp '-1' must be a finite number of seconds >= 0"),
        ("timestamp,tasks,duration_s\n,1,5\n", 2, "timestamp is empty"),
        ("timestamp,tasks,duration_s\nyesterday,1,5\n", 2, "neither seconds from the start nor ISO 8601"),
        ("timestamp,tasks,duration_s\n10,1,5\n\n5,1,5\n", 4, "earlier than the row before"),
        ("timestamp,tasks,duration_s\n0,1,5\n2024-01-01T00:00:00Z,1,5\n", 3, "mixes formats"),
        ('timestamp,tasks,duration_s\n0,1,"5\n', 2, "malformed CSV"),
        ("timestamp,tasks,duration_s\n0,9999999,1\n", 2, "more than 5,000,000 tasks"),
    ],
)
def test_bad_rows_name_the_line_and_the_problem(text: str, line: int, what: str) -> None:
    with pytest.raises(TraceError) as e:
        parse_trace(text, source="bad.csv")
    assert e.value.row == line
    assert what in e.value.message
    assert str(e.value).startswith(f"bad.csv, line {line}: ")


def test_unreadable_and_non_utf8_files(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="cannot read"):
        read_trace(tmp_path / "missing.csv")
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(b"timestamp,tasks,duration_s\n0,1,5\n\xe9,1,5\n")
    with pytest.raises(TraceError) as e:
        read_trace(bad)
    assert (e.value.row, e.value.message) == (3, "not UTF-8 text")


def test_azure_rows_one_task_per_request_with_the_duration_model() -> None:
    text = (
        "TIMESTAMP,ContextTokens,GeneratedTokens\r\n"
        "2023-11-16 18:17:03.9799600,4808,10\r\n"
        "2023-11-16 18:17:04.0319600,3180,8\r\n"
        "2023-11-16 18:17:05.0000000,100,0"
    )
    t = parse_trace(text, name="azure")
    assert t.source == "azure"
    assert t.start == datetime(2023, 11, 16, 18, 17, 3, 979960, tzinfo=UTC)
    assert [round(x.arrival_s, 6) for x in t.tasks] == [0.0, 0.052, 1.02004]
    # 0.5 + 0.0005 * context + 0.05 * generated
    assert [x.duration_s for x in t.tasks] == pytest.approx([0.5 + 2.404 + 0.5, 0.5 + 1.59 + 0.4, 0.5 + 0.05])
    assert all((x.cpus, x.gpus) == (1.0, 0.0) for x in t.tasks)
    assert "duration_s = 0.5 + 0.0005 * ContextTokens + 0.05 * GeneratedTokens" in t.notes[0]
    custom = parse_trace(text, azure_model=AzureDurationModel.parse("1,0,0.1"))
    assert [x.duration_s for x in custom.tasks] == pytest.approx([2.0, 1.8, 1.0])


@pytest.mark.parametrize(
    ("row", "what"),
    [
        ("2023-11-16 18:17:03.9799600,48x8,10", "ContextTokens '48x8' is not a whole number"),
        ("2023-11-16 18:17:03.9799600,4808", "has 2 fields"),
        ("16/11/2023 18:17:03,4808,10", "is not like 2023-11-16 18:17:03.9799600"),
        ("2023-02-30 18:17:03.1,4808,10", "not a valid date"),
        ("2023-11-16 18:17:03.9799600,4808,-3", "GeneratedTokens '-3' must be >= 0"),
        ("2023-11-16 18:17:02.0000000,1,1", "earlier than the row before"),
    ],
)
def test_bad_azure_rows_name_the_line(row: str, what: str) -> None:
    text = f"TIMESTAMP,ContextTokens,GeneratedTokens\r\n2023-11-16 18:17:03.0,1,1\r\n{row}"
    with pytest.raises(TraceError) as e:
        parse_trace(text, source="az.csv")
    assert e.value.row == 3
    assert what in e.value.message


@pytest.mark.parametrize("bad", ["1,2", "a,b,c", "-1,0,0", "0,0,0", "inf,0,0"])
def test_azure_model_flag_is_checked(bad: str) -> None:
    with pytest.raises(SimulationInputError, match="--azure-model"):
        AzureDurationModel.parse(bad)


def test_the_azure_fixture_is_the_unmodified_copy_and_reads_whole() -> None:
    data = AZURE.read_bytes()
    assert (
        hashlib.sha256(data).hexdigest() == "54e9a6d2a4bd06ba1e060304b900abbc74cbea53de96506e60fe5bb4f2277fb6"
    )
    assert (AZURE.parent / "README.md").read_text().count("CC BY 4.0") >= 1
    t = read_trace(AZURE)
    assert len(t.tasks) == 8819
    assert t.start == datetime(2023, 11, 16, 18, 17, 3, 979960, tzinfo=UTC)
    assert 3430 < t.tasks[-1].arrival_s < 3440  # 18:17:03 to 19:14:19
    assert all(b.arrival_s >= a.arrival_s for a, b in zip(t.tasks, t.tasks[1:], strict=False))


@pytest.mark.parametrize("kind", sorted(GENERATORS))
def test_synthetic_traces_are_seeded_and_round_trip_through_csv(kind: str) -> None:
    a, b, c = GENERATORS[kind](3), GENERATORS[kind](3), GENERATORS[kind](4)
    assert a.tasks == b.tasks
    assert a.tasks != c.tasks
    assert a.tasks
    back = parse_trace(to_csv(a.tasks, a.end_s))
    assert [(x.arrival_s, x.duration_s, x.cpus) for x in back.tasks] == [
        (x.arrival_s, x.duration_s, x.cpus) for x in a.tasks
    ]
    assert back.end_s == a.end_s
