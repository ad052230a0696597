"""The peer's side: what one organization's SuperNode does with its own table.

Nothing here imports :mod:`vfl_embed.server`; both sides meet in
:mod:`vfl_embed.wire`.
"""
