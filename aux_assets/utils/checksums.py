"""Checksums: multihash (``file:checksum``) and raw hex, computed incrementally."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

# multihash code -> (hashlib name, digest length in bytes)
_MULTIHASH: dict[int, tuple[str, int]] = {
    0x11: ("sha1", 20),
    0x12: ("sha256", 32),
    0x13: ("sha512", 64),
    0xD5: ("md5", 16),
}
_CODE_OF = {name: code for code, (name, _) in _MULTIHASH.items()}
_RAW_BY_LEN = {32: "md5", 40: "sha1", 64: "sha256", 128: "sha512"}


class ChecksumError(ValueError):
    """A checksum value that cannot be understood, or that does not match."""


class Hasher(Protocol):
    def update(self, data: bytes, /) -> None: ...
    def hexdigest(self) -> str: ...


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


@dataclass(frozen=True)
class Checksum:
    """A digest: algorithm (hashlib name) and lower-case hex value."""

    algorithm: str
    hexdigest: str

    @classmethod
    def parse(cls, value: str) -> Checksum:
        """Read a ``file:checksum`` multihash (hex) or a raw hex digest (md5/sha1/sha256/sha512).

        Raw hex is recognised by its length; case does not matter.
        """
        text = value.strip().lower()
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise ChecksumError(f"checksum {value!r} is not hexadecimal") from None
        algo = _RAW_BY_LEN.get(len(text))
        if len(raw) >= 2:
            code, length = raw[0], raw[1]
            if raw[0] & 0x80 and len(raw) >= 3:  # two-byte varint code (md5 = 0xd5 0x01)
                code = (raw[0] & 0x7F) | (raw[1] << 7)
                length, body = raw[2], raw[3:]
            else:
                body = raw[2:]
            spec = _MULTIHASH.get(code)
            if spec and spec[1] == length == len(body):
                return cls(spec[0], body.hex())
        if algo is None:
            raise ChecksumError(
                f"checksum {value!r} is neither a multihash (md5, sha1, sha256, sha512) "
                "nor a raw md5/sha1/sha256/sha512 hex digest"
            )
        return cls(algo, text)

    def multihash(self) -> str:
        """The checksum as a multihash hex string, as ``file:checksum`` v2 expects."""
        code = _CODE_OF[self.algorithm]
        digest = bytes.fromhex(self.hexdigest)
        return (_varint(code) + _varint(len(digest)) + digest).hex()


def new_hasher(algorithm: str) -> Hasher:
    """A hashlib object for ``algorithm`` (``md5`` is flagged as not for security use)."""
    if algorithm == "md5":
        return hashlib.md5(usedforsecurity=False)
    if algorithm not in _CODE_OF:
        raise ChecksumError(f"unsupported checksum algorithm {algorithm!r}")
    return hashlib.new(algorithm)


HASH_CHUNK = 1 << 20  # bytes read at a time when a stored file is hashed again


def hash_stream(chunks: Iterable[bytes], algorithm: str) -> tuple[int, Checksum]:
    """The size and ``algorithm`` checksum of the bytes ``chunks`` yields."""
    hasher, size = new_hasher(algorithm), 0
    for chunk in chunks:
        hasher.update(chunk)
        size += len(chunk)
    return size, Checksum(algorithm, hasher.hexdigest())
