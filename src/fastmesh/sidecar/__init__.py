"""Sidecar deployment helpers (control side): the interception init step."""
