"""Governance: the hash-chained audit log (PII, firewall and policy land here later)."""
