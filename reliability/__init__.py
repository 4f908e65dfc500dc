"""Fault and soak harness: retrying clients, injected failures, reconciliation (issue #8)."""
