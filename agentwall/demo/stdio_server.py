"""The built-in fast upstream over stdio: newline-delimited JSON-RPC.

Same answers as the HTTP variant (``mcp_logic``).  A plain blocking loop is
the cheapest thing that can serve one agent over a pipe; progress
notifications are written as separate lines before the result, each flushed,
so a proxy that buffers them would be caught.  Anything that is not a
message goes to stderr, never stdout (the spec forbids it there).

Run: ``python -m agentwall.demo.stdio_server``.  It exits when stdin closes.
"""

from __future__ import annotations

import sys
import time
from typing import BinaryIO

import orjson

from agentwall.demo.mcp_logic import PARSE_ERROR, dispatch, error

MAX_LINE = 16 * 1024 * 1024


def serve(stdin: BinaryIO, stdout: BinaryIO) -> int:
    while True:
        line = stdin.readline(MAX_LINE + 1)
        if not line:
            return 0
        if len(line) > MAX_LINE and not line.endswith(b"\n"):
            # Skip the rest of an oversize line, then report it.
            while line and not line.endswith(b"\n"):
                line = stdin.readline(MAX_LINE + 1)
            stdout.write(orjson.dumps(error(None, PARSE_ERROR, "line too long")) + b"\n")
            stdout.flush()
            continue
        if not line.strip():
            continue
        try:
            message = orjson.loads(line)
        except orjson.JSONDecodeError:
            stdout.write(orjson.dumps(error(None, PARSE_ERROR, "Parse error")) + b"\n")
            stdout.flush()
            continue
        if isinstance(message, list):
            answers = [r.response for r in map(dispatch, message) if r.response is not None]
            if answers:
                stdout.write(orjson.dumps(answers) + b"\n")
                stdout.flush()
            continue
        reply = dispatch(message)
        for note in reply.progress:
            if reply.delay_s > 0:
                time.sleep(reply.delay_s)
            stdout.write(orjson.dumps(note) + b"\n")
            stdout.flush()
        if reply.response is not None:
            stdout.write(orjson.dumps(reply.response) + b"\n")
            stdout.flush()


def main() -> int:
    try:
        return serve(sys.stdin.buffer, sys.stdout.buffer)
    except (BrokenPipeError, KeyboardInterrupt):
        return 0


if __name__ == "__main__":
    sys.exit(main())
