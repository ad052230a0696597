"""A peer's own secret and the alignment it keys."""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from pathlib import Path

from ..errors import PeerDataError
from ..wire.alignment import KeyedHashAlignment, PlainAlignment
from ..wire.protocol import ALIGNMENT_MODES
from ..wire.psi import PsiAlignment, PsiKey

__all__ = ["SECRET_BYTES", "SECRET_FILE", "make_alignment", "peer_secret"]

SECRET_FILE = "peer.key"
SECRET_BYTES = 32

def peer_secret(
    name: str, *, state_dir: Path | None, simulated_secret: str = ""
) -> bytes:
    """Return the peer's own secret (see the module docstring).

    Parameters
    ----------
    name : str
        The peer's name.
    state_dir : Path | None
        The peer's state directory (deployment); the secret is kept there.
    simulated_secret : str (default: "")
        In simulation, the run's demo secret the peer's secret derives from.
    """
    if simulated_secret:
        return hmac.new(simulated_secret.encode(), f"peer-secret:{name}".encode(),
                        hashlib.sha256).digest()
    if state_dir is None:
        raise PeerDataError(f"{name}: keeps no secret without a state-dir")
    path = Path(state_dir).expanduser() / name / SECRET_FILE
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as file:
                file.write(os.urandom(SECRET_BYTES))
        secret = path.read_bytes()
    except OSError as err:
        raise PeerDataError(
            f"{name}: cannot keep its secret in '{path}' "
            f"({err.strerror or type(err).__name__}); set the node config 'state-dir' "
            "to a directory this SuperNode can write") from err
    if len(secret) != SECRET_BYTES:
        raise PeerDataError(f"{name}: its secret file '{path}' is damaged; delete it "
                            "(later runs then align and add noise differently)")
    return secret


def make_alignment(
    mode: str, name: str, *, shared_secret: str, secret: Callable[[], bytes], seed: int,
    simulated: bool,
) -> KeyedHashAlignment | PsiAlignment | PlainAlignment:
    """Return the alignment the run config's ``alignment`` asks for.

    ``keyed-hash`` needs the secret the peers share; ``psi`` needs none (its
    scalar derives from the peer's own secret, which ``secret`` returns, and
    the run's seed); ``plain``
    lets anyone who can guess IDs read them and is refused outside simulation.
    """
    if mode == "keyed-hash":
        if not shared_secret:
            raise PeerDataError(f"{name}: keyed-hash alignment needs the secret the "
                                "peers share, and it is empty")
        return KeyedHashAlignment(shared_secret)
    if mode == "psi":
        return PsiAlignment(PsiKey.derive(secret(), f"psi:{seed}".encode()))
    if mode == "plain":
        if not simulated:
            raise PeerDataError(f"{name}: alignment 'plain' shows the server every ID "
                                "it can guess; it is only allowed in simulation")
        return PlainAlignment()
    raise PeerDataError(f"{name}: unknown alignment '{mode}'; use one of "
                        f"{', '.join(ALIGNMENT_MODES)}")


