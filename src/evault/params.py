"""Vault parameters (n, m, k) and what they guarantee, in plain words (DESIGN §2).

- n: storage nodes; m: slices needed to rebuild (IDA threshold); k: signature shares per receipt.
- A receipt of k shares proves the document recoverable despite t liars iff k − t ≥ m: of the k
  signers at most t lied, so at least k − t honest nodes stored their slice, and m of those rebuild.
- Deposits still get receipts with f nodes down iff k ≤ n − f.
- Retrievals work with f nodes down iff m ≤ n − f − t (t liars may serve bad slices; their blocks
  are rejected by the fingerprints, so m good ones must remain).
- A fingerprint vector is trusted when t + 1 nodes agree on it (or it matches the signed receipt).
- Shoup's threshold RSA is robust (liars cannot block a receipt) iff k ≤ n − t.

Pure: no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

#: The largest cluster we support: slice indices are one byte, and Δ = n! stays manageable.
MAX_NODES = 64


@dataclass(frozen=True)
class Guarantees:
    n: int
    m: int
    k: int
    #: Byzantine nodes tolerated: a receipt still implies recoverability, and FV agreement works.
    t: int
    #: nodes that may be down while deposits still get receipts (with no liars among the rest).
    deposit_down: int
    #: nodes that may be down while retrievals still work, with t liars among the rest.
    retrieve_down_with_liars: int
    #: nodes that may be down while retrievals still work, when nobody lies.
    retrieve_down_no_liars: int
    #: liars cannot block receipts (Shoup robustness, k ≤ n − t).
    robust_receipts: bool
    storage_overhead: float

    def sentences(self) -> list[str]:
        """What this setting guarantees, one plain sentence each."""
        out = [
            f"Each document is cut into {self.n} slices, one per node; any {self.m} rebuild it "
            f"(storage overhead {self.storage_overhead:.2f}x the document size).",
            f"A receipt carries {self.k} node signatures; it proves the document can be rebuilt "
            f"even if {self.t} of those nodes lied (k - t = {self.k - self.t} >= m = {self.m}).",
            f"Deposits still get receipts with up to {self.deposit_down} node(s) down.",
            f"Retrievals still return the right bytes with up to "
            f"{self.retrieve_down_with_liars} node(s) down while {self.t} other(s) lie, or "
            f"{self.retrieve_down_no_liars} down when nobody lies.",
            f"A slice fingerprint vector is trusted when {self.t + 1} nodes agree on it or it "
            "matches the signed receipt.",
        ]
        if self.t == 0:
            out.append(
                "No lying node is tolerated: a liar can make an operation fail, but a receipt "
                "is never forged and wrong bytes are never returned."
            )
        elif self.robust_receipts:
            out.append(f"{self.t} lying node(s) cannot stop a deposit from getting its receipt.")
        else:
            out.append(
                f"Receipts need {self.k} of {self.n} nodes to answer honestly: a single lying or "
                "down node above that stops deposits (no forged receipt is possible, though)."
            )
        return out


def analyse(n: int, m: int, k: int) -> Guarantees:
    """Check (n, m, k) and compute what they guarantee.

    Raises ``ValueError`` naming the parameter for settings that guarantee nothing.
    """
    for name, value in (("n", n), ("m", m), ("k", k)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name}: expected an integer, got {type(value).__name__}")
    if not 1 <= n <= MAX_NODES:
        raise ValueError(f"n: must be between 1 and {MAX_NODES}, got {n}")
    if not 1 <= m <= n:
        raise ValueError(f"m: must be between 1 and n={n}, got {m}")
    if not 1 <= k <= n:
        raise ValueError(f"k: must be between 1 and n={n}, got {k}")
    if k < m:
        raise ValueError(
            f"k: a receipt of k={k} signatures cannot prove that m={m} slices were stored; "
            f"need k >= m"
        )
    # t liars: receipts must still imply recoverability (k - t >= m), and FV agreement by t + 1
    # honest nodes needs an honest majority (n >= 2t + 1).
    t = max(0, min(k - m, (n - 1) // 2))
    if t == 0 and m == n and k == n:
        raise ValueError(
            f"n, m, k: ({n}, {m}, {k}) tolerates no node down and no lying node, so it guarantees "
            "nothing a single server would not; lower m or k, or add nodes"
        )
    return Guarantees(
        n=n,
        m=m,
        k=k,
        t=t,
        deposit_down=n - k,
        retrieve_down_with_liars=max(0, n - m - t),
        retrieve_down_no_liars=n - m,
        robust_receipts=k <= n - t,
        storage_overhead=n / m,
    )
