"""Routing policies, one module each, registered here by their YAML key."""

from __future__ import annotations

from policies import failover
from policies.base import Policy

POLICIES: dict[str, Policy] = {policy.key: policy for policy in (failover.POLICY,)}

__all__ = ["POLICIES", "Policy"]
