//! The master key and what is derived from it. The only code that touches key bytes.
//!
//! Construction (decision 2):
//! `epoch_key = blake3::derive_key(VISITOR_CONTEXT, master ‖ "YYYY-MM-DD")` for each epoch
//! (one calendar day in the pipeline's time zone), and
//! `visitor = first 8 bytes of blake3::keyed_hash(epoch_key, client ‖ user_agent)`.
//! A 64-bit pseudonym keeps the chance of any collision among n visitors of a day at about
//! n²/2⁶⁵: 3·10⁻⁸ for a million visitors, 3·10⁻⁴ for a hundred million (docs/PRIVACY.md).
//!
//! Keys are wiped on drop, print as `<redacted>`, and are never written except by `keygen`.

use std::fmt;
use std::io::Write;
use std::path::Path;

use zeroize::Zeroizing;

use crate::day::Day;

/// Context strings are fixed forever for a given meaning: changing one changes every pseudonym.
const VISITOR_CONTEXT: &str = "logveil 2026-11-24 visitor pseudonym v1";
const FINGERPRINT_CONTEXT: &str = "logveil 2026-11-24 key epoch fingerprint v1";
const RELEASE_CONTEXT: &str = "logveil 2026-11-24 dp release noise v1";
const LEDGER_CONTEXT: &str = "logveil 2026-11-24 dp ledger digest v1";
const BUCKET_CONTEXT: &str = "logveil 2026-11-24 client bucket v1";
const STATE_CONTEXT: &str = "logveil 2026-11-24 visitor state at rest v1";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}; create one with `logveil keygen {path}`")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "key file {path} must hold exactly 64 hex digits (a 256-bit key); create one with `logveil keygen FILE`"
    )]
    Malformed { path: String },
    #[error("{path} is accessible to group or others (mode {mode:o}); run `{fix} {path}`")]
    Permissions {
        path: String,
        mode: u32,
        fix: &'static str,
    },
    #[error("{path} in a key ring is not named by the first day of its period (YYYY-MM-DD.key)")]
    RingName { path: String },
    #[error(
        "the master of the period starting {period} in key ring {path} was destroyed: its pseudonyms can never be recomputed, so that period cannot be processed again"
    )]
    Destroyed { path: String, period: String },
    #[error("key ring {path} holds no key; add one with `logveil key rotate --key-dir {path}`")]
    EmptyRing { path: String },
    #[error(
        "key file {path} holds a weak key (too few distinct bytes to be random); create a new one with `logveil keygen FILE`"
    )]
    Weak { path: String },
    #[error(
        "key file {path} already exists; logveil never overwrites a key (delete it yourself if you mean to shred it)"
    )]
    Exists { path: String },
    #[error("cannot write key file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("the system random number generator failed: {0}")]
    Random(String),
}

/// A 256-bit master key.
pub struct MasterKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

impl MasterKey {
    /// A fresh random key from the operating system.
    pub fn generate() -> Result<MasterKey, KeyError> {
        let mut bytes = Zeroizing::new([0u8; 32]);
        getrandom::fill(bytes.as_mut()).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(MasterKey(bytes))
    }

    /// For tests and golden vectors only.
    pub fn from_bytes(bytes: [u8; 32]) -> MasterKey {
        MasterKey(Zeroizing::new(bytes))
    }

    /// Reads a key file written by `keygen`: 64 hex digits and an optional newline, mode 0600.
    pub fn read(path: &Path) -> Result<MasterKey, KeyError> {
        let shown = path.display().to_string();
        let file = std::fs::File::open(path).map_err(|source| KeyError::Read {
            path: shown.clone(),
            source,
        })?;
        check_private(file.metadata(), &shown, "chmod 600")?;
        let mut text = Zeroizing::new(Vec::with_capacity(66));
        std::io::Read::take(file, 128)
            .read_to_end_zeroizing(&mut text)
            .map_err(|source| KeyError::Read {
                path: shown.clone(),
                source,
            })?;
        let hex = text.trim_ascii();
        if hex.len() != 64 {
            return Err(KeyError::Malformed { path: shown });
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        for (i, pair) in hex.chunks(2).enumerate() {
            let hi = hex_value(pair[0]).ok_or_else(|| KeyError::Malformed {
                path: shown.clone(),
            })?;
            let lo = hex_value(pair[1]).ok_or_else(|| KeyError::Malformed {
                path: shown.clone(),
            })?;
            bytes[i] = hi << 4 | lo;
        }
        let mut distinct = [false; 256];
        bytes.iter().for_each(|&b| distinct[b as usize] = true);
        // 32 random bytes have fewer than 12 distinct values with probability about 10⁻²⁵.
        if distinct.iter().filter(|&&d| d).count() < 12 {
            return Err(KeyError::Weak { path: shown });
        }
        Ok(MasterKey(bytes))
    }

    /// Writes a new random key to `path` (mode 0600), refusing to overwrite anything.
    pub fn write_new(path: &Path) -> Result<(), KeyError> {
        let shown = path.display().to_string();
        let key = MasterKey::generate()?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::AlreadyExists => KeyError::Exists {
                path: shown.clone(),
            },
            _ => KeyError::Write {
                path: shown.clone(),
                source,
            },
        })?;
        let mut hex = Zeroizing::new(String::with_capacity(65));
        for b in key.0.iter() {
            hex.push(char::from(b"0123456789abcdef"[usize::from(b >> 4)]));
            hex.push(char::from(b"0123456789abcdef"[usize::from(b & 15)]));
        }
        hex.push('\n');
        file.write_all(hex.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|source| KeyError::Write {
                path: shown,
                source,
            })
    }

    /// The visitor key of one epoch (one day).
    pub fn epoch_key(&self, epoch: Day) -> EpochKey {
        EpochKey(Zeroizing::new(self.derive(VISITOR_CONTEXT, epoch)))
    }

    /// A public name for an epoch of this key, for the run record: 8 bytes of a separately
    /// derived value. It helps nobody recompute a pseudonym.
    pub fn epoch_id(&self, epoch: Day) -> String {
        let derived = Zeroizing::new(self.derive(FINGERPRINT_CONTEXT, epoch));
        derived[..8].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The key of the noise stream for the cells released for `day` (differential privacy).
    pub fn release_key(&self, day: Day) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.derive(RELEASE_CONTEXT, day))
    }

    /// The key that partitions clients into buckets during the period starting `period_start`.
    pub fn bucket_key(&self, period_start: Day) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.derive(BUCKET_CONTEXT, period_start))
    }

    /// The key that encrypts the carried visitor state of the epoch starting `epoch`: gone
    /// with this master, so the state is crypto-shredded with it.
    pub fn state_key(&self, epoch: Day) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.derive(STATE_CONTEXT, epoch))
    }

    /// The key of the privacy ledger's content digests for `day`.
    pub fn ledger_key(&self, day: Day) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.derive(LEDGER_CONTEXT, day))
    }

    fn derive(&self, context: &str, epoch: Day) -> [u8; 32] {
        let mut material = Zeroizing::new(Vec::with_capacity(42));
        material.extend_from_slice(self.0.as_ref());
        material.extend_from_slice(epoch.to_string().as_bytes());
        blake3::derive_key(context, &material)
    }
}

trait ReadToEndZeroizing {
    fn read_to_end_zeroizing(&mut self, out: &mut Vec<u8>) -> std::io::Result<()>;
}

impl<R: std::io::Read> ReadToEndZeroizing for R {
    fn read_to_end_zeroizing(&mut self, out: &mut Vec<u8>) -> std::io::Result<()> {
        // The capacity reserved by the caller is never exceeded for a valid key file, so the
        // key bytes are not left behind in a reallocated buffer.
        self.read_to_end(out).map(|_| ())
    }
}

/// Refuses a key file or key ring that group or others can access (`fix` says how to mend it).
pub(crate) fn check_private(
    metadata: std::io::Result<std::fs::Metadata>,
    shown: &str,
    fix: &'static str,
) -> Result<(), KeyError> {
    let metadata = metadata.map_err(|source| KeyError::Read {
        path: shown.to_string(),
        source,
    })?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions {
                path: shown.to_string(),
                mode: mode & 0o777,
                fix,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = (metadata, fix);
    Ok(())
}

/// `2·N` hex digits as `N` bytes; `None` for any other text.
pub(crate) fn parse_hex<const N: usize>(s: &[u8]) -> Option<[u8; N]> {
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (b, pair) in out.iter_mut().zip(s.chunks(2)) {
        *b = hex_value(pair[0])? << 4 | hex_value(pair[1])?;
    }
    Some(out)
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The key of one epoch.
pub struct EpochKey(Zeroizing<[u8; 32]>);

impl EpochKey {
    /// The key's bytes, for a staged run's derived-key file (never logged).
    pub fn bytes(&self) -> &[u8; 32] {
        &self.0
    }

    pub fn from_bytes(bytes: [u8; 32]) -> EpochKey {
        EpochKey(Zeroizing::new(bytes))
    }
}

impl fmt::Debug for EpochKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EpochKey(<redacted>)")
    }
}

impl EpochKey {
    /// The visitor pseudonym of (client address, user agent). The client is canonicalised
    /// first, so `::ffff:192.0.2.1` and `192.0.2.1` are one client; the two fields are
    /// length-prefixed so no pair of strings can collide with another by concatenation.
    pub fn visitor(&self, client: &[u8], user_agent: &[u8]) -> u64 {
        self.visitor_of_canonical(canonical_client(client).as_bytes(), user_agent)
    }

    /// [`Self::visitor`] of a client already in [`canonical_client`] form (the pseudonymiser
    /// canonicalises once per pageview, for all of its hashes).
    pub fn visitor_of_canonical(&self, canonical: &[u8], user_agent: &[u8]) -> u64 {
        let client_len = (canonical.len() as u32).to_le_bytes();
        let agent_len = (user_agent.len() as u32).to_le_bytes();
        keyed_hash_u64(&self.0, [&client_len, canonical, &agent_len, user_agent])
    }
}

/// The first 8 bytes (little-endian) of the keyed BLAKE3 hash of `pieces` one after another.
/// Laid out in one buffer on the stack and hashed in one call when they fit (a pageview's
/// client and user agent nearly always do): four `Hasher::update` calls cost as much again as
/// the hash's three compressions (`perf`, the 5 M-line benchmark). The same hash either way.
pub fn keyed_hash_u64(key: &[u8; 32], pieces: [&[u8]; 4]) -> u64 {
    const ROOM: usize = 512;
    let len: usize = pieces.iter().map(|p| p.len()).sum();
    let hash = if len <= ROOM {
        let mut buf = [0u8; ROOM];
        let mut at = 0;
        for piece in pieces {
            buf[at..at + piece.len()].copy_from_slice(piece);
            at += piece.len();
        }
        blake3::keyed_hash(key, &buf[..len])
    } else {
        let mut hasher = blake3::Hasher::new_keyed(key);
        pieces.iter().for_each(|p| {
            hasher.update(p);
        });
        hasher.finalize()
    };
    u64::from_le_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"))
}

/// A client in canonical form (what the pseudonym hashes): an address's bytes, held inline so
/// that canonicalising a pageview's client allocates nothing, or a host name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CanonicalClient {
    /// IPv4 → 4 bytes, IPv6 → 16 bytes (IPv4-mapped → 4).
    Address { bytes: [u8; 16], len: u8 },
    /// Anything else (a host name, when lookups are on), lower-cased.
    Name(Vec<u8>),
}

impl CanonicalClient {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            CanonicalClient::Address { bytes, len } => &bytes[..usize::from(*len)],
            CanonicalClient::Name(name) => name,
        }
    }
}

/// IPv4 → 4 bytes, IPv6 → 16 bytes (IPv4-mapped → 4), anything else (a host name) lower-cased.
pub fn canonical_client(client: &[u8]) -> CanonicalClient {
    use std::net::{IpAddr, Ipv6Addr};
    // The one-pass readers take the common forms; `std` reads the rest (brackets, zones,
    // embedded IPv4) the same way it always did.
    let ip = dotted_quad(client)
        .map(IpAddr::from)
        .or_else(|| plain_ipv6(client).map(|o| IpAddr::V6(Ipv6Addr::from(o))))
        .or_else(|| {
            let text = std::str::from_utf8(client).ok()?;
            text.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
                .ok()
        });
    let address = |octets: &[u8]| {
        let mut bytes = [0; 16];
        bytes[..octets.len()].copy_from_slice(octets);
        CanonicalClient::Address {
            bytes,
            len: octets.len() as u8,
        }
    };
    match ip {
        Some(IpAddr::V4(v4)) => address(&v4.octets()),
        Some(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => address(&v4.octets()),
            None => address(&v6.octets()),
        },
        None => CanonicalClient::Name(client.to_ascii_lowercase()),
    }
}

/// An IPv4 address in the form `std` parses (four decimal octets up to 255, no leading zero),
/// read in one pass: most clients are IPv4, and the general parser cost as much as a quarter
/// of the keyed hash. Anything else is `None`, for the general parser.
fn dotted_quad(b: &[u8]) -> Option<[u8; 4]> {
    let mut out = [0u8; 4];
    let mut part = 0;
    let (mut value, mut digits) = (0u32, 0);
    for (i, &c) in b.iter().enumerate() {
        match c {
            b'0'..=b'9' => {
                if digits == 1 && value == 0 {
                    return None; // a leading zero
                }
                value = value * 10 + u32::from(c - b'0');
                digits += 1;
                if value > 255 {
                    return None;
                }
            }
            b'.' if digits > 0 && part < 3 && i + 1 < b.len() => {
                out[part] = value as u8;
                part += 1;
                (value, digits) = (0, 0);
            }
            _ => return None,
        }
    }
    if part != 3 || digits == 0 {
        return None;
    }
    out[3] = value as u8;
    Some(out)
}

/// An IPv6 address in its common forms, read in one pass: eight groups of one to four hex
/// digits, or at most six around one `::` (which then stands for two or more zero groups).
/// `None` for anything else (embedded IPv4, a zone, brackets, `::` for one group), which
/// the general parser then reads: every address this accepts, `std` reads the same.
fn plain_ipv6(b: &[u8]) -> Option<[u8; 16]> {
    if b.len() < 2 || b.len() > 39 {
        return None;
    }
    let mut head = [0u16; 8];
    let mut tail = [0u16; 8];
    let (mut heads, mut tails) = (0, 0);
    let mut gap = false;
    let mut i = 0;
    if b.starts_with(b"::") {
        gap = true;
        i = 2;
        if i == b.len() {
            return Some([0; 16]);
        }
    }
    loop {
        // One group of hex digits.
        let (mut value, mut digits) = (0u16, 0);
        while i < b.len() && digits < 5 {
            let d = match b[i] {
                c @ b'0'..=b'9' => c - b'0',
                c @ b'a'..=b'f' => c - b'a' + 10,
                c @ b'A'..=b'F' => c - b'A' + 10,
                _ => break,
            };
            value = (value << 4) | u16::from(d);
            digits += 1;
            i += 1;
        }
        if digits == 0 || digits > 4 {
            return None;
        }
        if gap {
            if tails == 8 {
                return None;
            }
            tail[tails] = value;
            tails += 1;
        } else {
            if heads == 8 {
                return None;
            }
            head[heads] = value;
            heads += 1;
        }
        if i == b.len() {
            break;
        }
        if b[i] != b':' {
            return None;
        }
        i += 1;
        if i < b.len() && b[i] == b':' {
            if gap {
                return None;
            }
            gap = true;
            i += 1;
            if i == b.len() {
                break;
            }
        } else if i == b.len() {
            return None;
        }
    }
    let groups = heads + tails;
    if (gap && groups > 6) || (!gap && groups != 8) {
        return None;
    }
    let mut all = [0u16; 8];
    all[..heads].copy_from_slice(&head[..heads]);
    all[8 - tails..].copy_from_slice(&tail[..tails]);
    let mut out = [0u8; 16];
    for (k, g) in all.iter().enumerate() {
        out[2 * k..2 * k + 2].copy_from_slice(&g.to_be_bytes());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// BLAKE3's own test key, as the STYLE guide suggests for golden vectors.
    const TEST_KEY: [u8; 32] = *b"whats the Elvish word for friend";

    /// Every address the one-pass IPv6 reader accepts, `std` parses to the same octets;
    /// and it accepts the common forms (so the fast path is taken).
    #[test]
    fn plain_ipv6_agrees_with_std() {
        let check = |s: &str| {
            if let Some(got) = plain_ipv6(s.as_bytes()) {
                let want = s.parse::<std::net::Ipv6Addr>().map(|a| a.octets());
                assert_eq!(Ok(got), want, "{s:?}");
            }
        };
        // The common forms, which the fast path must take, then odd ones it may leave to std.
        let common = [
            "2001:db8::1",
            "::",
            "::1",
            "1::",
            "2001:0db8:0000:0000:0000:ff00:0042:8329",
        ];
        for s in common {
            assert!(plain_ipv6(s.as_bytes()).is_some(), "{s}");
        }
        for s in common.into_iter().chain([
            "fe80::1:2:3:4",
            "::ffff:c000:0201",
            "1:2:3:4:5:6:7:8",
            "1:2:3:4:5:6::7",
            "1:2:3:4:5::6",
            ":::",
            "1:::2",
            "12345::1",
            "1:2",
            "::ffff:1.2.3.4",
            "fe80::1%eth0",
            "[::1]",
            "1:2:3:4:5:6:7:8:9",
            "::1:2:3:4:5:6:7",
            "g::1",
            "1::2::3",
            ":1::2",
            "1::2:",
        ]) {
            check(s);
        }
        let alphabet = [b'0', b'1', b'a', b'F', b':', b':', b'f', b'9', b'.', b'g'];
        let mut next = crate::test_numbers(0x2545_f491_4f6c_dd1du64);
        for _ in 0..300_000 {
            let x = next();
            let len = (x % 20) as usize + 1;
            let bytes: Vec<u8> = (0..len)
                .map(|i| alphabet[((x >> (i * 3 % 60)) as usize + i) % alphabet.len()])
                .collect();
            check(std::str::from_utf8(&bytes).unwrap());
            let groups: Vec<String> = (0..8)
                .map(|k| format!("{:x}", (x >> (k * 8)) as u16 & 0x0fff))
                .collect();
            let cut = (x >> 60) as usize % 8;
            check(&groups.join(":"));
            check(&format!(
                "{}::{}",
                groups[..cut.min(3)].join(":"),
                groups[5..].join(":")
            ));
        }
        // The canonical forms agree whichever parser read them.
        assert_eq!(
            canonical_client(b"::ffff:198.51.0.7"),
            canonical_client(b"198.51.0.7")
        );
        assert_eq!(
            canonical_client(b"::ffff:c633:0007"),
            canonical_client(b"198.51.0.7")
        );
        assert_eq!(
            canonical_client(b"2001:DB8::1"),
            canonical_client(b"2001:db8:0:0:0:0:0:1")
        );
    }

    /// The one-pass IPv4 reader accepts exactly what `std` parses as IPv4, with the same
    /// octets: hand-picked edges and every string over a small alphabet up to 8 bytes long
    /// sampled, plus real-looking addresses.
    #[test]
    fn dotted_quad_agrees_with_std() {
        let check = |s: &str| {
            let want = s.parse::<std::net::Ipv4Addr>().ok().map(|a| a.octets());
            assert_eq!(dotted_quad(s.as_bytes()), want, "{s:?}");
        };
        for s in [
            "0.0.0.0",
            "255.255.255.255",
            "256.1.1.1",
            "1.2.3",
            "1.2.3.4.5",
            "01.2.3.4",
            "1.02.3.4",
            "1.2.3.04",
            "1.2.3.",
            ".1.2.3",
            "1..2.3",
            "1.2.3.4 ",
            " 1.2.3.4",
            "1.2.3.-4",
            "+1.2.3.4",
            "1.2.3.4a",
            "",
            "1",
            "1.2.3.1000",
            "192.168.100.200",
            "10.0.0.1",
            "0.1.2.3",
            "00.1.2.3",
            "::1",
            "::ffff:1.2.3.4",
            "1.2.3.4:80",
        ] {
            check(s);
        }
        let alphabet = ['0', '1', '2', '5', '9', '.', 'x'];
        let mut next = crate::test_numbers(0x9e37_79b9_7f4a_7c15u64);
        for _ in 0..200_000 {
            let x = next();
            let len = (x % 9) as usize + 7;
            let s: String = (0..len)
                .map(|i| alphabet[((x >> (i * 3 + 4)) % 7) as usize])
                .collect();
            check(&s);
            let a = [x as u8, (x >> 8) as u8, (x >> 16) as u8, (x >> 24) as u8];
            check(&format!("{}.{}.{}.{}", a[0], a[1], a[2], a[3]));
        }
    }

    #[test]
    fn pseudonym_golden_vectors() {
        // Computed independently from the construction in the module docs with the Python
        // `blake3` package (see tests/it/pseudonym_vectors.py); any change to derivation breaks this.
        let key = MasterKey::from_bytes(TEST_KEY);
        let day = Day::parse("2026-11-24").unwrap();
        let ek = key.epoch_key(day);
        let got = [
            ek.visitor(b"192.0.2.1", b"Mozilla/5.0"),
            ek.visitor(b"2001:db8::1", b"Mozilla/5.0"),
            ek.visitor(b"192.0.2.1", b""),
        ];
        let want: [u64; 3] = include!("../../tests/it/pseudonym_vectors.txt");
        assert_eq!(got, want);
    }

    /// The one-call hash equals BLAKE3's keyed hash of the pieces joined in a `Vec`, on both
    /// sides of its stack buffer's size (user agents up to 1 100 bytes, empty pieces).
    #[test]
    fn keyed_hash_of_pieces_is_the_hash_of_their_concatenation() {
        let key = [9u8; 32];
        let agent: Vec<u8> = (0..1100u32).map(|i| b'a' + (i % 26) as u8).collect();
        for len in (0..=1100).step_by(7).chain(500..=520) {
            let pieces: [&[u8]; 4] = [b"\x04\0\0\0", &[192, 0, 2, 1], &[], &agent[..len]];
            let joined: Vec<u8> = pieces.concat();
            let want = blake3::keyed_hash(&key, &joined);
            let want = u64::from_le_bytes(want.as_bytes()[..8].try_into().unwrap());
            assert_eq!(keyed_hash_u64(&key, pieces), want, "{len}");
        }
    }

    #[test]
    fn pseudonyms_stable_per_key_and_different_across_keys_and_days() {
        let a = MasterKey::from_bytes(TEST_KEY);
        let b = MasterKey::from_bytes([7u8; 32]);
        let d1 = Day::parse("2026-11-24").unwrap();
        let v = |k: &MasterKey, d: Day| k.epoch_key(d).visitor(b"192.0.2.1", b"UA");
        assert_eq!(v(&a, d1), v(&a, d1));
        assert_ne!(v(&a, d1), v(&b, d1));
        assert_ne!(v(&a, d1), v(&a, d1.next()));
        let ek = a.epoch_key(d1);
        assert_eq!(
            ek.visitor(b"::ffff:192.0.2.1", b"UA"),
            ek.visitor(b"192.0.2.1", b"UA")
        );
        assert_ne!(
            ek.visitor(b"192.0.2.1U", b"A"),
            ek.visitor(b"192.0.2.1", b"UA")
        );
    }

    #[test]
    fn key_never_printed() {
        let key = MasterKey::from_bytes(TEST_KEY);
        assert_eq!(format!("{key:?}"), "MasterKey(<redacted>)");
        assert!(!format!("{:?}", key.epoch_key(Day(0))).contains("Elvish"));
    }

    #[test]
    fn key_file_checks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        MasterKey::write_new(&p).unwrap();
        assert!(matches!(
            MasterKey::write_new(&p),
            Err(KeyError::Exists { .. })
        ));
        let text = std::fs::read_to_string(&p).unwrap();
        assert_eq!(text.len(), 65);
        MasterKey::read(&p).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
                0o600
            );
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
            assert!(matches!(
                MasterKey::read(&p),
                Err(KeyError::Permissions { .. })
            ));
        }
        let write_600 = |name: &str, content: &str| {
            let q = dir.path().join(name);
            std::fs::write(&q, content).unwrap();
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&q, std::fs::Permissions::from_mode(0o600)).unwrap();
            }
            q
        };
        let short = write_600("short", "abcd\n");
        assert!(matches!(
            MasterKey::read(&short),
            Err(KeyError::Malformed { .. })
        ));
        let weak = write_600("weak", &"00".repeat(32));
        assert!(matches!(MasterKey::read(&weak), Err(KeyError::Weak { .. })));
        let bad = write_600("bad", &"zz".repeat(32));
        let err = MasterKey::read(&bad).unwrap_err().to_string();
        assert!(
            !err.contains("zz"),
            "the key text must not be echoed: {err}"
        );
    }
}
