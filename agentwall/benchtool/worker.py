"""Entry point of one load process: ``python -m agentwall.benchtool.worker --worker-fd FD``.

A separate module so that the classes unpickled from the parent are the ones
``loadgen`` defines, not copies in ``__main__``.
"""

from __future__ import annotations

import sys
from multiprocessing.connection import Connection

from agentwall.benchtool.loadgen import worker_main


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "--worker-fd":
        print("usage: python -m agentwall.benchtool.worker --worker-fd FD", file=sys.stderr)
        return 2
    conn = Connection(int(argv[1]))
    spec, first, n_channels, share = conn.recv()
    worker_main(spec, first, n_channels, share, conn)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
