"""docs/chatops.md holds the generated command reference, so it lists every command as parsed."""

from __future__ import annotations

from pathlib import Path

from bot.commands.reference import BEGIN, END, markdown
from bot.commands.table import COMMANDS

DOC = Path(__file__).resolve().parents[2] / "docs" / "chatops.md"


def test_the_doc_holds_the_generated_reference() -> None:
    text = DOC.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    assert text[start:end] == markdown(), "regenerate with: python -m bot.commands.reference"


def test_the_doc_lists_every_command_with_its_usage() -> None:
    text = DOC.read_text()
    for c in COMMANDS:
        assert f"### `{c.usage}`" in text


def test_the_doc_documents_every_access_policy_field() -> None:
    text = DOC.read_text()
    for field in (
        "slackUser",
        "slackGroup",
        "matrixUser",
        "kubernetesUser",
        "kubernetesGroup",
        "consoleUser",
        "namespaces",
        "profiles",
        "clustersPerUser",
        "workersPerCluster",
        "gpusPerCluster",
        "maxTtl",
        "devops",
        "approvers",
        "requestExpiry",
    ):
        assert f"`{field}`" in text or f"{field}:" in text, field
