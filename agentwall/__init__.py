"""AgentWall: a deterministic, audited security sidecar for MCP agents."""

from agentwall.types import AuditEvent, Call, Decision, Identity

__version__ = "0.1.0"

__all__ = ["AuditEvent", "Call", "Decision", "Identity", "__version__"]
