"""Test support: a real origin server, a TCP echo server and a harness that
runs a live fastmesh proxy in a background thread (see origin.py, harness.py)."""
