"""What a peer has already given away in one run, kept in its Flower context.

Flower keeps a node's ``Context.state`` between the messages of a run (in
simulation and on a SuperNode alike), so a peer can hold the server to what
it asked before:

- the aligned set is fixed by the first request that names rows (labels or
  embed), and every later request of the run must keep within it;
- a run releases latents once: a second ``train.embed`` could combine two
  releases of the same rows (two noise levels give two equations in the
  noiseless latents), so it is refused;
- the rows a run has released are counted against the policy's ``max-rows``.

The state is keyed by the run ID, since Flower may carry a context's state
from one run of a series to the next.
"""

from __future__ import annotations

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from .policy import PeerPolicy

__all__ = ["RunLedger"]


class RunLedger:
    """The record of one run's requests at one peer.

    Parameters
    ----------
    state : RecordDict
        The node's ``Context.state``; the ledger writes into it.
    run_id : int
        The Flower run the requests belong to.
    peer : str
        The peer's name, for refusals.
    policy : PeerPolicy
        The peer's own limits.
    """

    def __init__(self, state: RecordDict, run_id: int, peer: str,
                 policy: PeerPolicy) -> None:
        self._state = state
        self._prefix = f"vfl-embed.run-{run_id}"
        self.peer = peer
        self.policy = policy

    def keep_to_aligned(self, positions: np.ndarray) -> None:
        """Fix the aligned set on first use; refuse rows outside it afterwards."""
        key = f"{self._prefix}.aligned"
        if key not in self._state.array_records:
            self._state.array_records[key] = ArrayRecord(
                {"positions": Array(np.sort(positions).astype(np.int64))})
            return
        aligned = self._state.array_records[key]["positions"].numpy()
        if not np.isin(positions, aligned).all():
            raise self.policy.refuse(self.peer, "aligned set", "the request names rows "
                                     "outside the run's aligned rows")

    def check_release(self) -> None:
        """Refuse a second release of latents in this run."""
        if self._flags().get("released", False):
            raise self.policy.refuse(self.peer, "one release per run", "this run already "
                                     "released its latents; start a new run")

    def record_release(self) -> None:
        """Note that this run released its latents."""
        self._flags()["released"] = True

    def check_rows(self, n_rows: int, table_rows: int) -> None:
        """Refuse ``n_rows`` more encoded rows beyond the policy's ``max-rows``.

        ``max-rows = 0`` allows every row of the table once per run. Only
        rows actually released count (see :meth:`record_rows`), so a refused
        request uses up nothing.
        """
        total = int(self._flags().get("rows", 0)) + n_rows
        limit = self.policy.max_rows or table_rows
        if total > limit:
            raise self.policy.refuse(self.peer, "max-rows", f"the run would encode {total} "
                                     f"rows, more than {limit}")

    def record_rows(self, n_rows: int) -> None:
        """Count ``n_rows`` released rows against the run's ``max-rows``."""
        flags = self._flags()
        flags["rows"] = int(flags.get("rows", 0)) + n_rows

    def _flags(self) -> ConfigRecord:
        key = f"{self._prefix}.flags"
        if key not in self._state.config_records:
            self._state.config_records[key] = ConfigRecord()
        return self._state.config_records[key]
