"""Run reports: the files a run writes, the folders they go in, and their charts."""
