"""The node's signature shares: Shoup threshold RSA, proofs on demand (DESIGN §4).

The signer is handed the exact statement bytes the node built itself; ``share_value`` and
``sign_share`` PSS-encode them on their own, so nothing a peer sends is ever exponentiated as
is.  A deposit's answer carries the share alone (:meth:`ShareSigner.value`: one constant-time
exponentiation mod N); the gateway asks for the share with its proof of correctness
(:meth:`ShareSigner.sign`: two or three) only when the optimistic combination fails, to name
the node whose share was wrong.  Callers run both in a worker thread.

Precomputed nonces.  Half of a share's proof, the pair (r, v^r), does not depend on the message
(``evault.crypto.threshold_rsa``, module text), so the signer keeps a small
:class:`~evault.crypto.threshold_rsa.NoncePool` filled ahead of time and a proven share
spends one pair: two constant-time exponentiations instead of three.  When
the pool is empty (a burst of deposits), the share computes its nonce inline, as before.

Refilling is bounded and happens in idle time: one daemon thread per signer, one nonce at a
time, started only when the pool falls below ``low_water`` (and once at start-up), filling up to
``pool_size`` and then sleeping on a condition.  It starts a nonce only after ``refill_idle_s``
without any new share, and never while one is being signed.  That matters because gmpy2 holds
the GIL during an exponentiation: under a sustained stream of deposits, refilling would only
move the same work around (measured: no gain, slightly worse), so the pool then simply runs
dry and shares compute their nonces inline, as without a pool.  A share that arrives while a
nonce is being computed waits at most that one exponentiation (~10 ms at 3072 bits).
:meth:`ShareSigner.close` (or garbage collection of the signer, or interpreter exit) stops the
thread and drops the nonces; nonces live in memory only and are never written anywhere.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from types import TracebackType

from evault.crypto import threshold_rsa
from evault.crypto.numbers import RandomSource
from evault.errors import ConfigError
from evault.protocol.node_api import WireShare

#: Nonces kept ready (each ~0.8 KiB of secret state; 8 absorb a burst of 8 deposits).
DEFAULT_POOL_SIZE = 8
#: The refill thread wakes when fewer than this many nonces are left.
DEFAULT_LOW_WATER = 4
#: Quiet time (no new share) the refill thread waits for before each nonce.
DEFAULT_REFILL_IDLE_S = 0.05


@dataclass
class _RefillState:
    """Shared between a signer and its refill thread, guarded by the condition ``cond``."""

    cond: threading.Condition
    wanted: bool = True  # start-up: fill the pool once
    signing: int = 0  # shares being signed right now; refilling waits for 0
    started: int = 0  # shares begun so far; a change means "not idle"
    stopped: bool = False


def _refill_loop(pool: threshold_rsa.NoncePool, state: _RefillState, idle_s: float) -> None:
    """Body of the refill thread.  Holds no reference to the signer, so the signer can be
    garbage collected (its finalizer then stops this loop)."""
    cond = state.cond
    while True:
        with cond:
            cond.wait_for(lambda: state.stopped or (state.wanted and state.signing == 0))
            if state.stopped:
                return
            if len(pool) >= pool.capacity:
                state.wanted = False
                cond.notify_all()  # wake wait_ready()
                continue
            if idle_s > 0 and not _quiet_for(state, idle_s):
                continue  # not idle: wait for the next quiet spell
        pool.fill_one()  # one exponentiation, outside the condition's lock


def _quiet_for(state: _RefillState, idle_s: float) -> bool:
    """Wait (holding ``state.cond``) until ``idle_s`` passes without a new share: True, or a
    share starts or the signer stops: False."""
    seen = state.started
    state.cond.wait_for(lambda: state.stopped or state.started != seen, idle_s)
    return not state.stopped and state.started == seen


def _stop(pool: threshold_rsa.NoncePool, state: _RefillState) -> None:
    with state.cond:
        state.stopped = True
        state.cond.notify_all()
    pool.clear()


@dataclass(frozen=True)
class SignerStats:
    """How the shares signed so far got their proof nonce."""

    precomputed: int
    inline: int
    pooled: int


class ShareSigner:
    """Signs with node ``index``'s key share; checks the share against the public key first.

    ``pool_size`` = 0 turns precomputation off (every share computes its nonce inline);
    ``low_water`` and ``refill_idle_s`` bound the refill thread (module text).
    ``rng`` is where nonces come from, ``secrets.SystemRandom()`` by default.
    """

    def __init__(
        self,
        public: threshold_rsa.ThresholdPublicKey,
        share: threshold_rsa.KeyShare,
        *,
        index: int,
        pool_size: int = DEFAULT_POOL_SIZE,
        low_water: int = DEFAULT_LOW_WATER,
        refill_idle_s: float = DEFAULT_REFILL_IDLE_S,
        rng: RandomSource | None = None,
    ) -> None:
        if share.index != index:
            raise ConfigError(
                f"the signing share is share {share.index}, but this is node {index} "
                "(node i must hold share i)"
            )
        if not isinstance(pool_size, int) or pool_size < 0:
            raise ValueError(f"pool_size: expected an int >= 0, got {pool_size!r}")
        if not isinstance(low_water, int) or not 0 <= low_water <= pool_size:
            raise ValueError(f"low_water: expected 0..pool_size ({pool_size}), got {low_water!r}")
        if not isinstance(refill_idle_s, int | float) or not 0 <= refill_idle_s < 60:
            raise ValueError(f"refill_idle_s: expected 0 <= seconds < 60, got {refill_idle_s!r}")
        # A wrong share file must fail at start-up, not as invalid shares at every deposit.
        threshold_rsa.verify_key_share(public, share)
        self.public = public
        self._share = share
        self._rng = rng
        self._low_water = low_water
        self._counts_lock = threading.Lock()
        self._precomputed = 0
        self._inline = 0
        self._state = _RefillState(threading.Condition())
        self._pool: threshold_rsa.NoncePool | None = None
        self._thread: threading.Thread | None = None
        if pool_size > 0:
            self._pool = threshold_rsa.NoncePool(public, pool_size, rng=rng)
            self._thread = threading.Thread(
                target=_refill_loop,
                args=(self._pool, self._state, float(refill_idle_s)),
                name=f"evault-nonce-refill-{index}",
                daemon=True,  # never keeps a stopping node alive
            )
            # Stops the thread when the signer is garbage collected or the interpreter exits.
            self._finalizer = weakref.finalize(self, _stop, self._pool, self._state)
            self._thread.start()

    def value(self, message: bytes) -> WireShare:
        """The share of ``message`` without its proof: one exponentiation (a deposit's answer;
        the gateway asks for the proof, :meth:`sign`, only if the combination fails)."""
        state = self._state
        with state.cond:
            state.signing += 1
            state.started += 1
            state.cond.notify_all()  # an idle wait in the refill thread restarts
        try:
            share = threshold_rsa.share_value(self._share, self.public, message)
        finally:
            with state.cond:
                state.signing -= 1
                state.cond.notify_all()
        return WireShare(share.index, share.value)

    def sign(self, message: bytes) -> WireShare:
        """The share of ``message`` with its proof of correctness."""
        state = self._state
        with state.cond:
            state.signing += 1
            state.started += 1
            state.cond.notify_all()  # an idle wait in the refill thread restarts
        try:
            nonce = self._pool.take() if self._pool is not None else None
            share = threshold_rsa.sign_share(
                self._share, self.public, message, rng=self._rng, nonce=nonce
            )
        finally:
            with state.cond:
                state.signing -= 1
                if self._pool is not None and len(self._pool) < self._low_water:
                    state.wanted = True
                state.cond.notify_all()
        with self._counts_lock:
            if nonce is None:
                self._inline += 1
            else:
                self._precomputed += 1
        return WireShare(share.index, share.value, share.proof_c, share.proof_z)

    @property
    def stats(self) -> SignerStats:
        with self._counts_lock:
            return SignerStats(
                precomputed=self._precomputed,
                inline=self._inline,
                pooled=len(self._pool) if self._pool is not None else 0,
            )

    def wait_ready(self, timeout_s: float) -> bool:
        """Wait until the nonce pool is full: True then, False after ``timeout_s`` or when the
        signer is closed.  True at once when precomputation is off (``pool_size`` = 0)."""
        pool = self._pool
        if pool is None:
            return True
        state = self._state
        with state.cond:
            state.cond.wait_for(lambda: state.stopped or len(pool) >= pool.capacity, timeout_s)
            return not state.stopped and len(pool) >= pool.capacity

    def close(self) -> None:
        """Stop the refill thread and drop the precomputed nonces; signing still works after
        this, computing every nonce inline."""
        if self._pool is None or self._thread is None:
            return
        self._finalizer()
        self._thread.join()
        self._pool.clear()  # a nonce the thread finished while stopping

    def __enter__(self) -> ShareSigner:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
