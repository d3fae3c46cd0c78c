"""`python -m agentwall demo`, exactly as the README's first command runs it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from native_support import native_skipped_on_purpose

from agentwall import compiled
from agentwall.benchtool import procstat
from agentwall.benchtool.procs import has_module

pytestmark = [
    pytest.mark.integration,
    pytest.mark.timeout(300),
    pytest.mark.skipif(
        not (has_module("agentwall.cli.start") and has_module("agentwall.cli.verify_log")),
        reason="the demo needs `agentwall start` and `verify-log`",
    ),
]


# Runs a command as a child subreaper: whatever the command leaves running
# when it exits is re-parented here, not to init, so it can be seen (from
# the test process, a leftover would already belong to init and be
# invisible).  It writes the leftovers' command lines to argv[1] as JSON,
# then stops them.
_SUBREAPER = r"""
import ctypes, json, os, subprocess, sys, time
from agentwall.benchtool import procstat
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    sys.exit(97)
rc = subprocess.call(sys.argv[2:])
deadline = time.monotonic() + 5
while True:
    try:
        reaped, _ = os.waitpid(-1, os.WNOHANG)  # orphans that already exited
    except ChildProcessError:
        break
    if reaped == 0:
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
left = procstat.descendants(os.getpid())
with open(sys.argv[1], "w") as out:
    json.dump({str(p): " ".join(procstat.cmdline(p)) for p in left}, out)
procstat.kill_survivors(left)
sys.exit(rc)
"""


def _run_leaving_nothing(
    argv: list[str], report: Path, **kwargs: Any
) -> tuple[subprocess.CompletedProcess[str], dict[str, str]]:
    """Run ``argv``; also return what it left running when it exited."""
    done = subprocess.run(
        [sys.executable, "-c", _SUBREAPER, str(report), *argv],
        capture_output=True,
        text=True,
        check=False,
        **kwargs,
    )
    left: dict[str, str] = json.loads(report.read_text()) if report.exists() else {"?": "no report"}
    return done, left


def test_the_subreaper_sees_what_a_command_leaves_behind(tmp_path: Path) -> None:
    # The check below must be able to fail: a command that exits and leaves
    # a sleeping grandchild is caught.
    orphan = (
        "import subprocess, sys; "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])"
    )
    done, left = _run_leaving_nothing(
        [sys.executable, "-c", orphan], tmp_path / "left.json", timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert len(left) == 1, left
    assert "time.sleep(60)" in next(iter(left.values()))


def test_demo_runs_clean_and_leaves_nothing_behind(tmp_path: Path) -> None:
    env = dict(os.environ, TMPDIR=str(tmp_path), HOME=str(tmp_path / "home"))
    before = set(os.listdir(tmp_path))
    done, left = _run_leaving_nothing(
        [sys.executable, "-m", "agentwall", "demo"], tmp_path / "left.json", timeout=240, env=env
    )
    out = done.stdout
    assert done.returncode == 0, out + done.stderr
    # Each outcome is printed, and each is what the policy says.
    assert out.count("ALLOWED") == 3
    assert out.count("DENIED") == 4
    assert "<-- expected" not in out
    assert "tools[run_shell]" in out
    assert "within" in out  # the traversal was refused by the path rule
    assert "safe_mode.ssrf" in out
    assert "safe_mode.secret" in out
    assert "run_shell" not in out.split("filtered by the policy):")[1].splitlines()[0]
    assert "$ agentwall verify-log" in out
    assert "$ agentwall report" in out
    assert "Demo finished" in out
    # The proxy says which parts run compiled; the suite's two passes know which to expect.
    hot = "compiled" if compiled.implementation() == "compiled" else "python"

    def native(env_var: str) -> str:
        python = native_skipped_on_purpose() or os.environ.get(env_var) == "python"
        return "python" if python else "native"

    built = (
        f"  built     http_head_scan {native('AGENTWALL_HTTPHEAD')}, "
        f"json_syntax_counts {native('AGENTWALL_JSONSCAN')}, hot_modules {hot}"
    )
    assert built in out.splitlines(), out
    # Every process stopped, the temporary directory removed, and the user's
    # home untouched (the audit key lived in the temporary directory).
    assert left == {}
    assert set(os.listdir(tmp_path)) - before <= {"home", "left.json"}
    assert not (tmp_path / "home" / ".config" / "agentwall").exists()


def test_demo_keep_leaves_a_verifiable_log(tmp_path: Path) -> None:
    env = dict(os.environ, TMPDIR=str(tmp_path))
    done = subprocess.run(
        [sys.executable, "-m", "agentwall", "demo", "--keep"],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("agentwall-demo-")]
    assert len(kept) == 1
    log = kept[0] / "audit.log"
    assert log.stat().st_size > 0
    verify = subprocess.run(
        [sys.executable, "-m", "agentwall", "verify-log", str(log)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(env, AGENTWALL_AUDIT_KEY_DIR=str(kept[0])),
        check=False,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    # Tampering is caught: flip one byte of a decision entry.
    data = bytearray(log.read_bytes())
    at = data.index(b'"decision":"deny"')
    data[at + 12 : at + 16] = b"dent"  # "deny" -> "dent": any edit must break the chain
    log.write_bytes(bytes(data))
    tampered = subprocess.run(
        [sys.executable, "-m", "agentwall", "verify-log", str(log)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(env, AGENTWALL_AUDIT_KEY_DIR=str(kept[0])),
        check=False,
    )
    assert tampered.returncode != 0


def test_demo_stopped_by_sigterm_stops_its_processes(tmp_path: Path) -> None:
    env = dict(os.environ, TMPDIR=str(tmp_path), HOME=str(tmp_path / "home"))
    before = set(os.listdir(tmp_path))
    demo = subprocess.Popen(
        [sys.executable, "-m", "agentwall", "demo"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    seen: dict[int, int] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and demo.poll() is None:
            seen.update(procstat.descendants(demo.pid))
            if any("agentwall start" in " ".join(procstat.cmdline(p)) for p in seen):
                break
            time.sleep(0.05)
        assert demo.poll() is None, demo.communicate()
        demo.send_signal(signal.SIGTERM)
        _out, err = demo.communicate(timeout=120)
        assert demo.returncode == 128 + signal.SIGTERM, err
        assert "stopped by SIGTERM" in err
        left = {p: procstat.cmdline(p) for p in procstat.survivors_after(seen, 60)}
        assert not left, left
        assert set(os.listdir(tmp_path)) - before <= {"home"}
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
        procstat.kill_survivors(seen)  # whatever a failure left behind
