"""The server's side: the vertical strategy and what it runs.

Exchanges with the peers, prediction and the downstream model. Nothing here
imports :mod:`vfl_embed.peer`; both sides meet in :mod:`vfl_embed.wire`.
"""
