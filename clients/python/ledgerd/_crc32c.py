"""CRC-32C (Castagnoli) in pure Python, fast enough for 1 MiB frames.

The standard library has no CRC-32C (``zlib.crc32`` is the IEEE polynomial), and a
byte-at-a-time table loop costs about 100 ns per byte in CPython: 100 ms for one full frame,
which alone would cap a client near 80,000 transfers per second. Instead, the message is
treated as one big integer and reduced with a handful of big-integer shifts and XORs, which
CPython runs in C over 30-bit digits: about 2.5 ms per MiB.

The arithmetic. Read the message as ``R = int.from_bytes(data, "little")``; bit ``i`` of ``R``
is the coefficient of ``y**i`` of a polynomial over GF(2). For the reflected CRC-32C, with
``G = 0x105EC76F1`` (the reflected polynomial ``0x82F63B78`` shifted up, plus the ``y**0``
term), the register after processing ``n`` bits is the ``C`` (degree < 32) with
``R + C * y**n ≡ 0 (mod G)``, that is ``C = (R mod G) * y**-n mod G``; the initial value
``0xFFFFFFFF`` is the same as XORing it into the first 32 message bits, and the final XOR is
applied at the end. ``y`` is invertible mod ``G`` because ``G`` has a constant term, and
``y**-1 = G >> 1``.

``R mod G`` is computed in two stages:

1. Horner's rule over chunks of ``_CHUNK`` bytes from the end of the message, using the sparse
   relation ``y**(8 * _CHUNK) ≡ y**_A + y**_B + 1 (mod G)`` (found by search; checked by the
   tests), so that ``acc * y**(8 * _CHUNK) + chunk`` costs three shifts/XORs instead of a
   full reduction. ``acc`` grows by only ``_A`` bits per chunk.
2. A dense fold of what is left: ``hi * y**k + lo ≡ hi * (y**k mod G) + lo``, halving the
   width each time, with ``y**k mod G`` precomputed for ``k = 2**j``.

Small inputs (headers, short replies) go through the ordinary table loop, which is faster
below a few hundred bytes.
"""

from __future__ import annotations

__all__ = ["crc32c"]

_POLY_REFLECTED = 0x82F63B78
_G = (_POLY_REFLECTED << 1) | 1  # 0x105EC76F1, degree 32
_MASK32 = 0xFFFFFFFF

# y**(8 * 8564) ≡ y**807 + y**304 + 1 (mod G).
_CHUNK = 8564
_A = 807
_B = 304

# Below this many bytes the table loop wins.
_SMALL = 256


def _table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (_POLY_REFLECTED if c & 1 else 0)
        table.append(c)
    return table


_TABLE = _table()


def _pmod(a: int) -> int:
    """``a mod G`` for a small ``a`` (a few dozen bits), bit by bit."""
    w = a.bit_length()
    while w > 32:
        a ^= _G << (w - 33)
        w = a.bit_length()
    return a


def _pmul(a: int, b: int) -> int:
    """``a * b mod G`` for ``a, b`` of degree < 32 (carry-less)."""
    r = 0
    while b:
        if b & 1:
            r ^= a
        b >>= 1
        a <<= 1
        if a >> 32:
            a ^= _G
    return _pmod(r)


def _ppow(a: int, e: int) -> int:
    """``a**e mod G``."""
    r = 1
    a = _pmod(a)
    while e:
        if e & 1:
            r = _pmul(r, a)
        a = _pmul(a, a)
        e >>= 1
    return r


# _LADDER[j]: the bit positions of y**(2**j) mod G, for the dense fold (j >= 5).
_LADDER: dict[int, tuple[int, ...]] = {}
_c = _ppow(2, 1 << 5)
for _j in range(5, 48):
    _LADDER[_j] = tuple(i for i in range(33) if _c >> i & 1)
    _c = _pmul(_c, _c)
del _c, _j

_Y_INVERSE = _G >> 1
# y**-n mod G by message length in bytes; frame lengths repeat, so this stays small.
_INVERSE_BY_LENGTH: dict[int, int] = {}
_INVERSE_CACHE_MAX = 4096


def _dense_mod(r: int) -> int:
    """``r mod G`` by halving folds with precomputed ``y**(2**j) mod G``."""
    w = r.bit_length()
    while w > 64:
        j = (w - 33).bit_length() - 1  # 2**j <= w - 33: the fold strictly shrinks r
        k = 1 << j
        hi = r >> k
        r &= (1 << k) - 1
        for s in _LADDER[j]:
            r ^= hi << s
        w = r.bit_length()
    return _pmod(r)


def _crc_table(data: bytes | bytearray | memoryview, crc: int = 0) -> int:
    table = _TABLE
    c = crc ^ _MASK32
    for byte in data:
        c = table[(c ^ byte) & 0xFF] ^ (c >> 8)
    return c ^ _MASK32


def crc32c(data: bytes | bytearray | memoryview) -> int:
    """CRC-32C of ``data`` (init and final XOR ``0xFFFFFFFF``, as in iSCSI and ext4)."""
    n = len(data)
    if n < _SMALL:
        return _crc_table(data)
    mv = memoryview(data).cast("B") if isinstance(data, memoryview) else memoryview(data)
    from_bytes = int.from_bytes
    a, b, chunk = _A, _B, _CHUNK
    top = (n - 1) // chunk * chunk
    acc = from_bytes(mv[top:], "little")
    for off in range(top - chunk, -1, -chunk):
        acc ^= (acc << a) ^ (acc << b) ^ from_bytes(mv[off : off + chunk], "little")
    # The initial register value enters as the first 32 message bits (n >= 4 here).
    acc ^= _MASK32
    inverse = _INVERSE_BY_LENGTH.get(n)
    if inverse is None:
        if len(_INVERSE_BY_LENGTH) >= _INVERSE_CACHE_MAX:
            _INVERSE_BY_LENGTH.clear()
        inverse = _INVERSE_BY_LENGTH[n] = _ppow(_Y_INVERSE, 8 * n)
    return _pmul(_dense_mod(acc), inverse) ^ _MASK32
