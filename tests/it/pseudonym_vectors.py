"""Independent computation of logveil's visitor pseudonyms (golden vectors).

Implements the construction documented in src/pseudonymise/keys.rs with the Python `blake3`
package, not with logveil's code:
    epoch_key = derive_key("logveil 2026-11-24 visitor pseudonym v1", master || b"YYYY-MM-DD")
    visitor   = u64_le(keyed_hash(epoch_key, u32le(len c) || c || u32le(len ua) || ua)[:8])
Run: python3 tests/it/pseudonym_vectors.py > tests/it/pseudonym_vectors.txt
"""
import ipaddress
import struct
from blake3 import blake3

CONTEXT = "logveil 2026-11-24 visitor pseudonym v1"
MASTER = b"whats the Elvish word for friend"


def canonical(client: str) -> bytes:
    ip = ipaddress.ip_address(client)
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.packed


def visitor(day: str, client: str, ua: bytes) -> int:
    epoch_key = blake3(MASTER + day.encode(), derive_key_context=CONTEXT).digest()
    c = canonical(client)
    msg = struct.pack("<I", len(c)) + c + struct.pack("<I", len(ua)) + ua
    return struct.unpack("<Q", blake3(msg, key=epoch_key).digest()[:8])[0]


cases = [("192.0.2.1", b"Mozilla/5.0"), ("2001:db8::1", b"Mozilla/5.0"), ("192.0.2.1", b"")]
print("[" + ", ".join(str(visitor("2026-11-24", c, u)) for c, u in cases) + "]")
