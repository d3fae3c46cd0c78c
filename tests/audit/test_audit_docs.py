"""docs/audit.md's third-party verifier really verifies logs AgentWall wrote."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from agentwall.audit.files import chain_files, head_path
from agentwall.audit.keys import AuditKey
from agentwall.audit.log import AuditLog
from agentwall.audit.verify import verify_files
from agentwall.types import AuditEvent

DOC = Path(__file__).resolve().parents[2] / "docs" / "audit.md"
MakeEvent = Callable[..., AuditEvent]


def doc_verifier() -> str:
    text = DOC.read_text(encoding="utf-8")
    start = text.index("```python", text.index("<!-- verifier -->")) + len("```python\n")
    return text[start : text.index("```", start)]


@pytest.fixture
def verifier(tmp_path: Path) -> Path:
    path = tmp_path / "doc_verify.py"
    path.write_text(doc_verifier())
    return path


def run(verifier: Path, key: AuditKey, log_path: Path, files: list[Path]) -> str:
    done = subprocess.run(
        [
            sys.executable,
            str(verifier),
            key.secret.hex(),
            str(head_path(log_path)),
            *map(str, files),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_it_is_about_thirty_lines() -> None:
    code = [line for line in doc_verifier().splitlines() if line.strip()]
    assert len(code) <= 40


def test_doc_verifier_accepts_our_logs_and_rejects_tampering(
    verifier: Path, log_path: Path, key: AuditKey, make_event: MakeEvent
) -> None:
    # Several runs (restarts), rotation, a torn tail and its recovery entry,
    # non-ASCII and nested params: everything the format can hold.
    with AuditLog.open(log_path, key, max_bytes=3000) as log:
        for i in range(12):
            log.append_batch([make_event(i)])
        log.append_batch(
            [
                AuditEvent(
                    event="decision",
                    reason='ünïcødé ✓ "quoted" \\ \u2028',
                    params={"b": [1, 2.5, None, True], "a": {"z": "ß"}},
                    masked=("/a/z",),
                )
            ]
        )
    with log_path.open("ab") as f:
        f.write(b'{"torn')
    with AuditLog.open(log_path, key, max_bytes=3000) as log:
        log.append_batch([make_event(99)])
    files = chain_files(log_path)
    assert len(files) > 2
    ours = verify_files(files, [key])
    assert ours.valid
    assert {n.kind for n in ours.report.notices} == {"recovery:torn_tail"}
    assert run(verifier, key, log_path, files) == f"VALID: {ours.report.entries} entries"

    # Truncating the tail: caught through the sealed head.
    active = files[-1]
    original = active.read_bytes()
    active.write_bytes(b"".join(original.splitlines(keepends=True)[:-1]))
    assert run(verifier, key, log_path, files).startswith("INVALID: entries")
    # A flipped byte in an old file.
    active.write_bytes(original)
    first = files[0].read_bytes()
    files[0].write_bytes(first[:100] + bytes([first[100] ^ 1]) + first[101:])
    assert run(verifier, key, log_path, files).startswith("INVALID at seq")
    files[0].write_bytes(first)
    assert run(verifier, key, log_path, files).startswith("VALID")
    # The wrong key.
    other = AuditKey(bytes(32 * [7]), source="other")
    assert run(verifier, other, log_path, files) == "INVALID: no valid sealed head"
