"""``rs-isal-cauchy/v1``: systematic Reed–Solomon with ISA-L's Cauchy matrix, run by ISA-L.

What the id means (the bytes, independent of any library): field GF(2^8) modulo
x^8+x^4+x^3+x^2+1 (0x11D); IDA matrix T = [I_m | C] with C[r][i] = 1/(i XOR r) for slices
m <= i < n (``matrix.cauchy_systematic``, the transpose of ISA-L's ``gf_gen_cauchy1_matrix``);
block layout of ``base.py`` (rows of ceil(L/m) bytes, last one zero-padded).  Blocks carry no
header.  Slices 0..m-1 are the segment itself, so a retrieval with every data slice present costs
one concatenation.  Maximum n = 256 (Cauchy points must be distinct bytes).

Why this codec and this binding.  Measured here (2-core Xeon with AVX-512 and GFNI, shared with
other jobs, so figures vary by ±30 %): one 1 MiB segment at (m, n) = (3, 5), MB/s of segment data,
best of 7 rounds; decode from slices 2, 3, 4 (two data slices missing)::

    implementation                                   encode   decode
    ISA-L ec_encode_data via ctypes (this module)    ~11000   ~10700
    pyeclib 1.8 isa_l_rs_cauchy (liberasurecode)      ~5000    ~5300
    pyeclib 1.8 isa_l_rs_vand                         ~4700    ~3200-5400
    pyeclib 1.8 liberasurecode_rs_vand                ~1040     ~720
    zfec 1.6                                          ~1100    ~1100
    ida-ref/v1 / fallback (pure Python)                ~450     ~435

pyeclib runs the same ISA-L kernels but copies every segment into aligned buffers and every
fragment out again, and each fragment carries an 80-byte liberasurecode header (fragment index,
sizes, backend id and version, a CRC of the header) that its decoder *requires*.  Storing that
header would tie evault's stored slices to liberasurecode's header format while adding nothing
evault needs: the index, sizes and codec are in the signed statement, and integrity is the Merkle
fingerprint's job.  liberasurecode also caps n at 32.  So we call the stable functions of ISA-L's
public API (``erasure_code.h``: ``ec_init_tables``, ``ec_encode_data``, and ``gf_invert_matrix``
for decoding) through ctypes, on the ISA-L the pyeclib wheel bundles (or a system ``libisal``),
and store bare blocks.  A test checks that our blocks equal the payloads of pyeclib's
``isa_l_rs_cauchy`` fragments byte for byte, so the id really means "what ISA-L's Cauchy RS
computes".  (Cauchy rather than ISA-L's Vandermonde: ``gf_gen_rs_matrix`` is not MDS for every
(m, n), e.g. m=6 with 5 parity slices has a singular 6×6 choice; a Cauchy matrix always is.)

The library is found and self-tested against the reference implementation the first time a codec
is built; if it is missing or fails, the same code runs on :class:`ReferenceIDA` (same bytes, about
25× slower), so data written with this id stays readable without any native library.
``isal_status()`` says which one is in use.

ISA-L writes the parity rows straight into freshly allocated ``bytes`` objects
(``PyBytes_FromStringAndSize`` with a NULL source returns an uninitialised object that nobody else
references yet, the usual way C code fills a new bytes object).  Against a zeroed ctypes buffer
copied out with ``.raw`` this measured 10.4-11.3 GB/s instead of 3.8-6.4 GB/s for (3, 5) encoding.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from evault.ida.base import (
    BytesLike,
    as_view,
    check_blocks,
    check_params,
    check_segment_len,
    choose_indices,
    cut_pieces,
    row_bytes,
    split_rows,
)
from evault.ida.gf256 import ISAL_POLY, get_field
from evault.ida.matrix import Matrix, cauchy_systematic, columns, mat_inv
from evault.ida.reference import ReferenceIDA

CODEC_ID: Final = "rs-isal-cauchy/v1"

_DECODE_CACHE_LIMIT = 64

_new_bytes = ctypes.pythonapi.PyBytes_FromStringAndSize
_new_bytes.restype = ctypes.py_object
_new_bytes.argtypes = [ctypes.c_char_p, ctypes.c_ssize_t]


def _fresh(size: int) -> bytes:
    """A new, unshared, uninitialised bytes object of ``size`` bytes, for C code to fill."""
    if size <= 0:
        # CPython returns the shared empty-bytes singleton for 0: never hand that out to fill.
        raise ValueError(f"size: must be positive, got {size}")
    obj: bytes = _new_bytes(None, size)
    return obj


class _Lib:
    """The loaded ISA-L: its path and the three functions we call."""

    def __init__(self, cdll: ctypes.CDLL, path: str) -> None:
        self.path = path
        self.init_tables: Any = cdll.ec_init_tables
        self.init_tables.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_char_p]
        self.init_tables.restype = None
        self.encode_data: Any = cdll.ec_encode_data
        self.encode_data.argtypes = [
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        self.encode_data.restype = None
        self.invert_matrix: Any = cdll.gf_invert_matrix
        self.invert_matrix.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
        self.invert_matrix.restype = ctypes.c_int

    def tables(self, k: int, coefficient_rows: Matrix) -> ctypes.Array[ctypes.c_char]:
        """ISA-L's expanded tables for ``len(coefficient_rows)`` outputs of k inputs each."""
        flat = bytes(x for row in coefficient_rows for x in row)
        tbls = ctypes.create_string_buffer(32 * k * len(coefficient_rows))
        self.init_tables(k, len(coefficient_rows), flat, tbls)
        return tbls

    def run(
        self,
        length: int,
        k: int,
        tbls: ctypes.Array[ctypes.c_char],
        sources: list[bytes],
        rows: int,
    ) -> list[bytes]:
        outputs = [_fresh(length) for _ in range(rows)]
        src = (ctypes.c_char_p * k)(*sources)
        dst = (ctypes.c_char_p * rows)(*outputs)
        self.encode_data(length, k, rows, tbls, src, dst)
        return outputs

    def invert(self, a: Matrix) -> Matrix | None:
        size = len(a)
        work = ctypes.create_string_buffer(bytes(x for row in a for x in row), size * size)
        out = ctypes.create_string_buffer(size * size)
        if self.invert_matrix(work, out, size) != 0:
            return None
        raw = out.raw
        return tuple(tuple(raw[r * size : (r + 1) * size]) for r in range(size))


def _candidate_paths() -> list[str]:
    paths: list[str] = []
    spec = importlib.util.find_spec("pyeclib")
    for location in (spec.submodule_search_locations or []) if spec else []:
        # auditwheel puts the bundled shared libraries in "<package>.libs" beside the package.
        libs = Path(location).parent / "pyeclib.libs"
        paths.extend(sorted(str(p) for p in libs.glob("libisal*.so*")))
    system = ctypes.util.find_library("isal")
    if system:
        paths.append(system)
    return paths


def _self_test(lib: _Lib) -> bool:
    """Encode and decode a fixed segment with ISA-L and with the reference; must agree."""
    m, n = 3, 6
    segment = bytes((i * 37 + 11) % 256 for i in range(997))
    ref = ReferenceIDA(cauchy_systematic(get_field(ISAL_POLY), m, n), get_field(ISAL_POLY))
    fast = IsalCauchyCodec(m, n, lib=lib)
    blocks = fast.encode(segment)
    if blocks != ref.encode(segment):
        return False
    return fast.decode({3: blocks[3], 4: blocks[4], 5: blocks[5]}, len(segment)) == segment


_loaded: _Lib | None = None
_load_error: str | None = None
_load_tried = False


def _load() -> _Lib | None:
    global _loaded, _load_error, _load_tried
    if _load_tried:
        return _loaded
    _load_tried = True
    problems = []
    for path in _candidate_paths():
        try:
            lib = _Lib(ctypes.CDLL(path), path)
        except (OSError, AttributeError) as exc:
            problems.append(f"{path}: {exc}")
            continue
        if _self_test(lib):
            _loaded = lib
            return lib
        problems.append(f"{path}: self-test against the reference codec failed")
    _load_error = "; ".join(problems) or "no ISA-L library found (pyeclib wheel or system libisal)"
    return None


def isal_status() -> dict[str, str | bool | None]:
    """Which implementation ``rs-isal-cauchy/v1`` runs on: for benchmarks and ``doctor`` output."""
    lib = _load()
    return {
        "accelerated": lib is not None,
        "library": lib.path if lib else None,
        "problem": _load_error,
    }


class IsalCauchyCodec:
    """``rs-isal-cauchy/v1`` for one (m, n); see the module docstring.

    ``accelerate=False`` forces the pure-Python reference path (same bytes), for tests.
    """

    codec_id = CODEC_ID

    def __init__(self, m: int, n: int, *, accelerate: bool = True, lib: _Lib | None = None) -> None:
        self.m, self.n = check_params(m, n)
        field = get_field(ISAL_POLY)
        self.t: Matrix = cauchy_systematic(field, self.m, self.n)
        self._field = field
        self._lib = lib if lib is not None else (_load() if accelerate else None)
        self._reference = ReferenceIDA(self.t, field, codec_id=CODEC_ID, verify=False)
        self.row_slices: tuple[int | None, ...] = tuple(range(self.m))  # systematic
        self._parity_tables: ctypes.Array[ctypes.c_char] | None = None
        if self._lib is not None and self.n > self.m:
            # ISA-L's encode matrix rows for the parity slices: row i is column i of T.
            parity_rows = tuple(
                tuple(self.t[r][i] for r in range(self.m)) for i in range(self.m, self.n)
            )
            self._parity_tables = self._lib.tables(self.m, parity_rows)
        self._decode_cache: dict[tuple[int, ...], tuple[tuple[int, ...], Any]] = {}

    @property
    def accelerated(self) -> bool:
        return self._lib is not None

    def __repr__(self) -> str:
        how = "ISA-L" if self._lib else "reference"
        return f"IsalCauchyCodec(m={self.m}, n={self.n}, {how})"

    def block_bytes(self, segment_len: int) -> int:
        return row_bytes(check_segment_len(segment_len), self.m)

    def encode(self, segment: BytesLike) -> list[bytes]:
        if self._lib is None:
            return self._reference.encode(segment)
        view = as_view(segment, "segment")
        b = row_bytes(len(view), self.m)
        rows = split_rows(view, self.m, b)
        if self._parity_tables is None:  # n == m: no parity at all
            return rows
        if b == 0:
            return rows + [b""] * (self.n - self.m)
        return rows + self._lib.run(b, self.m, self._parity_tables, rows, self.n - self.m)

    def _decode_plan(self, lib: _Lib, chosen: tuple[int, ...]) -> tuple[tuple[int, ...], Any]:
        """For slices ``chosen``: the missing data rows and the ISA-L tables that rebuild them."""
        plan = self._decode_cache.get(chosen)
        if plan is not None:
            return plan
        missing = tuple(r for r in range(self.m) if r not in chosen)
        s = columns(self.t, chosen)
        inverse = lib.invert(s)
        if inverse is None:
            # Cannot happen for a Cauchy matrix (every square minor is invertible); fall back
            # to the Python inversion, which raises a ValueError naming the problem.
            inverse = mat_inv(self._field, s)
        # Data row r = Σ_c S⁻¹[c][r] · Q_{chosen[c]}: one ISA-L output row per missing r.
        rows = tuple(tuple(inverse[c][r] for c in range(self.m)) for r in missing)
        plan = (missing, lib.tables(self.m, rows))
        if len(self._decode_cache) >= _DECODE_CACHE_LIMIT:
            self._decode_cache.pop(next(iter(self._decode_cache)))
        self._decode_cache[chosen] = plan
        return plan

    def decode(self, blocks: Mapping[int, BytesLike], segment_len: int) -> bytes:
        return b"".join(self.decode_rows(blocks, segment_len))

    def decode_rows(
        self, blocks: Mapping[int, BytesLike], segment_len: int
    ) -> list[bytes | memoryview]:
        lib = self._lib
        if lib is None:
            return self._reference.decode_rows(blocks, segment_len)
        segment_len = check_segment_len(segment_len)
        b = row_bytes(segment_len, self.m)
        views = check_blocks(blocks, segment_len, self.m, self.n, b)
        chosen = choose_indices(views, self.m)
        if all(r in views for r in range(self.m)):
            return cut_pieces([views[r] for r in range(self.m)], segment_len)
        if b == 0:
            return []
        missing, tables = self._decode_plan(lib, chosen)
        sources = [views[j] for j in chosen]
        rebuilt = dict(zip(missing, lib.run(b, self.m, tables, sources, len(missing)), strict=True))
        rows = [rebuilt[r] if r in rebuilt else views[r] for r in range(self.m)]
        return cut_pieces(rows, segment_len)
