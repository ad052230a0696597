"""Measuring and bounding what a release gives away.

The reconstruction audit and differential-privacy accounting.
"""
