"""Dispersal core (pure code, no I/O): GF(2^8), IDA codecs, segmenting, distributed fingerprints.

Modules, bottom up:

* ``gf256``       field arithmetic, selectable polynomial (paper §2.5: 0x171; ISA-L: 0x11D)
* ``matrix``      matrices over GF(2^8): inverse, MDS check, systematic Cauchy generator
* ``base``        the ``Codec`` protocol and the block layout every codec shares
* ``reference``   Rabin's IDA over any m×n matrix (the paper's example runs on it)
* ``isal``        ``rs-isal-cauchy/v1``: the fast systematic RS codec on ISA-L (the default)
* ``registry``    ``get_codec(codec_id, m, n)``: ids recorded with documents stay readable
* ``segments``    ``Layout``, ``StreamEncoder``: documents of any size in bounded memory
* ``fingerprint`` per-slice Merkle trees, the fingerprint vector, FV selection

Typical deposit (what a node does)::

    codec = get_codec(DEFAULT_CODEC_ID, m, n)
    enc, fp = StreamEncoder(codec, DEFAULT_SEGMENT_BYTES), DocumentFingerprinter(n)
    for chunk in body:
        for blocks in enc.feed(chunk):
            fp.add(blocks); store(blocks[my_index])
    for blocks in enc.finish():
        fp.add(blocks); store(blocks[my_index])
    fv = fp.fv(); statement_fv_hash = fv.fv_hash()
"""

from evault.ida.base import MAX_N, Codec
from evault.ida.registry import CODEC_IDS, DEFAULT_CODEC_ID, REF_CODEC_ID, get_codec
from evault.ida.segments import (
    DEFAULT_SEGMENT_BYTES,
    MAX_SEGMENT_BYTES,
    Layout,
    StreamEncoder,
    decode_segment,
    disperse,
    reconstruct,
)

__all__ = [
    "CODEC_IDS",
    "DEFAULT_CODEC_ID",
    "DEFAULT_SEGMENT_BYTES",
    "MAX_N",
    "MAX_SEGMENT_BYTES",
    "REF_CODEC_ID",
    "Codec",
    "Layout",
    "StreamEncoder",
    "decode_segment",
    "disperse",
    "get_codec",
    "reconstruct",
]
