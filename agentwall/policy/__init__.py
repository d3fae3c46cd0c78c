"""The enforcement core: policy language, compiled evaluator, Safe Mode.

Pure: no I/O beyond reading the policy file in ``load_policy``; the clock is
passed in.  The HTTP front-end, the stdio wrapper, the worker pool and
``agentwall test`` all call these same functions.
"""

from __future__ import annotations

from agentwall.policy.compiled import SAFE_MODE_ONLY_WARNING, Policy
from agentwall.policy.evaluate import evaluate, filter_tools_list
from agentwall.policy.loader import load_policy, loads_policy
from agentwall.policy.model import (
    ClientConfig,
    IdentityConfig,
    IdentityRule,
    Limits,
    ParameterRule,
    PolicyModel,
    PromptRule,
    RateLimit,
    ResourceRule,
    SafeModeConfig,
    SessionConfig,
    ToolRule,
)

__all__ = [
    "SAFE_MODE_ONLY_WARNING",
    "ClientConfig",
    "IdentityConfig",
    "IdentityRule",
    "Limits",
    "ParameterRule",
    "Policy",
    "PolicyModel",
    "PromptRule",
    "RateLimit",
    "ResourceRule",
    "SafeModeConfig",
    "SessionConfig",
    "ToolRule",
    "evaluate",
    "filter_tools_list",
    "load_policy",
    "loads_policy",
]
