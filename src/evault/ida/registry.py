"""Codec registry: a codec id plus (m, n), as recorded with every stored document, gives back
the codec that reads it, whatever the current default is.

Known ids (each names the bytes; see the codec's module for the full definition):

=====================  =====================================================================
``rs-isal-cauchy/v1``  systematic RS, GF(2^8)/0x11D, ISA-L's Cauchy matrix; run by ISA-L,
                       pure-Python fallback with identical bytes.  The default.  n <= 256.
``ida-ref/v1``         systematic Cauchy IDA over the paper's field GF(2^8)/0x171, pure Python
                       only (about 25× slower); for tests, and a codec with no native code.
=====================  =====================================================================

Rules for the future: an id is never reused for different bytes; a new construction or layout
gets a new id (or ``/v2``), and old ids stay here so old documents stay readable.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import Final

from evault.errors import UnknownCodec
from evault.ida.base import Codec, check_params
from evault.ida.gf256 import PAPER_POLY, get_field
from evault.ida.isal import CODEC_ID as ISAL_CAUCHY_ID
from evault.ida.isal import IsalCauchyCodec
from evault.ida.matrix import cauchy_systematic
from evault.ida.reference import ReferenceIDA

REF_CODEC_ID: Final = "ida-ref/v1"
DEFAULT_CODEC_ID: Final = ISAL_CAUCHY_ID


def _ida_ref(m: int, n: int) -> Codec:
    field = get_field(PAPER_POLY)
    # Proven MDS (Cauchy), so the exhaustive column check is skipped.
    return ReferenceIDA(cauchy_systematic(field, m, n), field, codec_id=REF_CODEC_ID, verify=False)


_FACTORIES: Final[dict[str, Callable[[int, int], Codec]]] = {
    ISAL_CAUCHY_ID: IsalCauchyCodec,
    REF_CODEC_ID: _ida_ref,
}

#: Every codec id this version can read, default first.
CODEC_IDS: Final = tuple(sorted(_FACTORIES, key=lambda c: c != DEFAULT_CODEC_ID))


def get_codec(codec_id: str, m: int, n: int) -> Codec:
    """The codec ``codec_id`` with parameters (m, n).

    Raises ``UnknownCodec`` (an EvaultError: a document written by a newer evault) for an id not
    in ``CODEC_IDS``, ``TypeError``/``ValueError`` naming the argument for bad parameters.
    Instances are cached and safe to share between threads.
    """
    if not isinstance(codec_id, str):
        raise TypeError(f"codec_id: expected a str, got {type(codec_id).__name__}")
    m, n = check_params(m, n)
    if codec_id not in _FACTORIES:
        raise UnknownCodec(codec_id, CODEC_IDS)
    return _cached(codec_id, m, n)


@lru_cache(maxsize=64)
def _cached(codec_id: str, m: int, n: int) -> Codec:
    return _FACTORIES[codec_id](m, n)
