"""The wire contract both sides share.

Message types and records, alignment modes, private set intersection.
"""
