"""Signed notes (golang.org/x/mod/sumdb/note): verifier keys and signature checks.

A verifier key is ``<name>+<hash>+<base64 key>``: the key is an algorithm byte (1 for
Ed25519) and the 32-byte public key; the hash is 8 hex digits, the first four bytes of
SHA-256 over ``name + "\\n" + key``.  A signed note is its text (ending in a newline), a
blank line, then signature lines ``"— <name> <base64(4-byte key hash + signature)>"``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ._errors import MalformedResponseError, SignatureError

__all__ = ["Verifier", "key_hash", "open_note", "parse_verifier_key"]

_ALG_ED25519 = 1
_SIG_PREFIX = "— "
_MAX_SIGNATURES = 100


def key_hash(name: str, key: bytes) -> int:
    """The 32-bit hash that names a key next to its name."""
    digest = hashlib.sha256(name.encode() + b"\n" + key).digest()
    return int.from_bytes(digest[:4], "big")


def _valid_name(name: str) -> bool:
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


@dataclass(frozen=True)
class Verifier:
    """A parsed verifier key: checks signatures made by one Ed25519 key."""

    name: str
    key_hash: int
    public_key: bytes

    def verifies(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


def parse_verifier_key(vkey: str) -> Verifier:
    """Parse ``name+hash+base64key``; :class:`ValueError` says what is wrong with it."""
    name, _, rest = vkey.partition("+")
    hash_hex, _, key64 = rest.partition("+")
    try:
        if len(hash_hex) != 8:
            raise ValueError
        claimed = int(hash_hex, 16)
        key = base64.b64decode(key64, validate=True)
    except (ValueError, binascii.Error):
        raise ValueError("malformed verifier key") from None
    if not _valid_name(name) or not key:
        raise ValueError("malformed verifier key")
    if key_hash(name, key) != claimed:
        raise ValueError("verifier key hash does not match its name and key")
    if key[0] != _ALG_ED25519:
        raise ValueError("unknown verifier key algorithm")
    if len(key) != 33:
        raise ValueError("malformed verifier key")
    return Verifier(name=name, key_hash=claimed, public_key=key[1:])


def _check_note_text(msg: str) -> None:
    if any(ord(c) < 0x20 and c != "\n" for c in msg):
        raise MalformedResponseError("malformed signed note: control character")


def open_note(msg: bytes, verifier: Verifier) -> str:
    """The text of signed note ``msg`` once ``verifier``'s signature on it verifies.

    Signatures by other keys are ignored (as x/mod does); a note without a signature by
    ``verifier``, or whose signature by it does not verify, is a :class:`SignatureError`.
    """
    try:
        decoded = msg.decode("utf-8")
    except UnicodeDecodeError:
        raise MalformedResponseError("malformed signed note: not UTF-8") from None
    _check_note_text(decoded)
    split = decoded.rfind("\n\n")
    if split < 0:
        raise MalformedResponseError("malformed signed note: no signatures")
    text, sigs = decoded[: split + 1], decoded[split + 2 :]
    if not sigs.endswith("\n"):
        raise MalformedResponseError("malformed signed note: unterminated signature")
    lines = sigs[:-1].split("\n")
    if len(lines) > _MAX_SIGNATURES:
        raise MalformedResponseError("malformed signed note: too many signatures")
    verified = False
    for line in lines:
        if not line.startswith(_SIG_PREFIX):
            raise MalformedResponseError("malformed signed note: bad signature line")
        name, _, sig64 = line[len(_SIG_PREFIX) :].partition(" ")
        try:
            sig = base64.b64decode(sig64, validate=True)
        except binascii.Error:
            raise MalformedResponseError("malformed signed note: bad signature") from None
        if not _valid_name(name) or len(sig) < 5:
            raise MalformedResponseError("malformed signed note: bad signature")
        if name != verifier.name or int.from_bytes(sig[:4], "big") != verifier.key_hash:
            continue  # another key's signature: neither trusted nor an error
        if not verifier.verifies(text.encode(), sig[4:]):
            raise SignatureError(
                f"invalid signature by key {verifier.name}+{verifier.key_hash:08x}"
            )
        verified = True
    if not verified:
        raise SignatureError(f"tree head not signed by key {verifier.name}+{verifier.key_hash:08x}")
    return text
