"""Running the app from Python or the shell.

The notebook API, the command line, the paper's scenarios, a local federation.
"""
