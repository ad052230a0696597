"""Tables: reading and checking peer files, built-in and synthetic tables.

Peers read their files with it, and the server its label file.
"""
