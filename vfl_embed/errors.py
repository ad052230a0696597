"""Every error vfl_embed raises on purpose, in one place.

Each names who is at fault (a peer, the server's label file, a setting) and
never quotes a data value or an ID: peers send their error lines to the
server, and servers write theirs to reports.

- :class:`PeerDataError`: a peer cannot use its input or a request (raised
  inside the peer; the text goes to the server as the peer's error reply).
- :class:`PolicyError`: a request outside the peer's own privacy policy.
- :class:`PeerReplyError`: a peer's reply is missing, failed or invalid
  (raised on the server).
- :class:`VerticalRunError`: the run cannot go on (too few entities,
  labels missing, a bad setting).
- :class:`RunStoppedError`: the ServerApp stopped on one of the above,
  already logged.
- :class:`RunFailedError`: a ``flwr run`` started by the API or the command
  line did not complete.

:func:`log_text` makes text from another party (a peer's name or error
reply) one line, so that it cannot forge log or report lines.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .deploy.flwr_commands import LocalRun

__all__ = ["PeerDataError", "PeerReplyError", "PolicyError", "RunFailedError", "log_text",
           "RunStoppedError", "VerticalRunError"]

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


class PeerDataError(ValueError):
    """Input data of one peer is unusable; the message names the peer and why."""


class PolicyError(PeerDataError):
    """A request asks for more than the peer's privacy policy allows.

    The message names the peer and the rule (the node-config key), so the
    operator of the server can see which limit the organization set.
    """


class PeerReplyError(RuntimeError):
    """A peer's reply is missing, failed or invalid; the message names the peer.

    Parameters
    ----------
    peer : str
        The peer's name (``"node <id>"`` before it told its name).
    reason : str
        What was wrong, without the peer's name.
    """

    def __init__(self, peer: str, reason: str) -> None:
        # Both may come from the peer itself: one line each, whatever it sent.
        peer, reason = log_text(peer), log_text(reason)
        super().__init__(f"{peer}: {reason}")
        self.peer = peer
        self.reason = reason

    @classmethod
    def of_peers(cls, errors: Iterable[PeerReplyError], note: str = "") -> PeerReplyError:
        """One error for several peers; its message lists each peer's reason."""
        errors = sorted(errors, key=lambda e: e.peer)
        error = cls(", ".join(e.peer for e in errors), "")
        error.args = ("; ".join(str(e) for e in errors) + note,)
        error.reason = error.args[0]
        return error


class VerticalRunError(RuntimeError):
    """The run cannot go on (too few entities, labels missing, ...)."""


class RunStoppedError(Exception):
    """The run stopped on an error already logged; Flower marks it failed."""


class RunFailedError(RuntimeError):
    """A ``flwr run`` that did not complete.

    Its message starts with one line saying why, followed by the last lines
    of the run's output. ``run`` is the finished
    :class:`~vfl_embed.deploy.flwr_commands.LocalRun`; ``report_path`` names
    the partial ``report.json`` a stopped run still writes (None if it wrote
    none).
    """

    def __init__(self, run: LocalRun) -> None:
        self.run = run
        self.report_path = run.report_path
        tail = "\n".join(_ANSI.sub("", run.output).rstrip().splitlines()[-15:])
        super().__init__(f"{_failure_reason(run)}\nlast lines of the run's output:\n{tail}")


def _failure_reason(run: LocalRun) -> str:
    if run.report_path is not None:
        report = run.report
        if report.get("status") == "failed":
            return f"the run stopped in the {report['phase']} phase: {report['error']}"
    for line in reversed(_ANSI.sub("", run.output).splitlines()):
        # The ServerApp's one-line reason, or a killed run's note.
        if "vfl_embed stopped" in line:
            return "the run stopped " + line.split("vfl_embed stopped", 1)[1].strip()
        if "vfl_embed: flwr run killed" in line:
            return line.split("vfl_embed: ", 1)[1].strip()
    return f"flwr run exited with code {run.returncode} and wrote no report"


def log_text(text: object) -> str:
    """Return ``text`` on one line, without control characters.

    Control, format and line-separator characters (newlines, tabs, the
    escape of ANSI colours, bidirectional overrides) become one space each.
    """
    return "".join(" " if _is_control(c) else c for c in str(text))


def _is_control(char: str) -> bool:
    return unicodedata.category(char) in {"Cc", "Cf", "Zl", "Zp"}
