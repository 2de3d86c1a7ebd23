"""Routing policies, one module each, registered here by their YAML key."""

from __future__ import annotations

from policies import ab_split, classify, cost_threshold, failover, match
from policies.base import Policy

POLICIES: dict[str, Policy] = {
    policy.key: policy
    for policy in (
        classify.POLICY,
        cost_threshold.POLICY,
        ab_split.POLICY,
        failover.POLICY,
        match.POLICY,
    )
}

__all__ = ["POLICIES", "Policy"]
