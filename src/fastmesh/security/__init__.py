"""Workload identity: SPIFFE IDs (spiffe.py) and the built-in certificate
authority (ca.py, control side: it signs, the data side only verifies)."""
