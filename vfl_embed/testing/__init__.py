"""Test harnesses that drive the real code.

An in-process grid, network hosts on one machine, a TLS deployment across them.
"""
