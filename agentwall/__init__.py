"""AgentWall: a deterministic, audited security sidecar for MCP agents."""

from agentwall import compiled

# Before anything imports a hot module: AGENTWALL_NO_MYPYC=1 at run time
# loads their pure-Python sources even where a compiled build is installed.
compiled.honour_no_mypyc()

from agentwall.types import AuditEvent, Call, Decision, Identity  # noqa: E402

__version__ = "0.1.0"

__all__ = ["AuditEvent", "Call", "Decision", "Identity", "__version__"]
