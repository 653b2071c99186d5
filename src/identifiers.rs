//! What an identifier looks like: e-mail addresses, UUIDs, long digit runs and high-entropy
//! tokens (decision 15 and 16).
//!
//! The pseudonymise stage replaces URL path segments and campaign values of these shapes with
//! placeholders (`:email`, `:uuid`, `:id`, `:token`), so `/orders/918273645` or
//! `/reset/9f86d081884c7d659a2feaa0c55ad015` never reach a table even when many visitors saw
//! them. The test is by character class and entropy, not by length alone, so ordinary slugs
//! such as `how-to-configure-nginx` or `iphone-15-pro-256gb` pass untouched.

/// The kind of identifier a value looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentifierKind {
    Email,
    Uuid,
    Id,
    Token,
}

impl IdentifierKind {
    pub fn placeholder(self) -> &'static str {
        match self {
            IdentifierKind::Email => ":email",
            IdentifierKind::Uuid => ":uuid",
            IdentifierKind::Id => ":id",
            IdentifierKind::Token => ":token",
        }
    }
}

/// Classifies one path segment or campaign value.
pub fn classify(value: &str) -> Option<IdentifierKind> {
    if looks_like_email(value) {
        return Some(IdentifierKind::Email);
    }
    if contains_uuid(value) {
        return Some(IdentifierKind::Uuid);
    }
    if value
        .split(['-', '_', '.', '~', '+', '='])
        .any(looks_like_token)
    {
        return Some(IdentifierKind::Token);
    }
    if longest_digit_run(value) >= 6 || looks_like_phone(value) {
        return Some(IdentifierKind::Id);
    }
    None
}

fn looks_like_email(v: &str) -> bool {
    let v = v.replace("%40", "@");
    match v.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        }
        None => false,
    }
}

fn contains_uuid(v: &str) -> bool {
    let b = v.as_bytes();
    b.windows(36).any(|w| {
        w.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
    })
}

fn longest_digit_run(v: &str) -> usize {
    let mut best = 0;
    let mut run = 0;
    for c in v.bytes() {
        if c.is_ascii_digit() {
            run += 1;
            best = best.max(run);
        } else {
            run = 0;
        }
    }
    best
}

/// `+7 (916) 123-45-67`, `8-916-123-45-67`: ten or more digits with only phone punctuation.
fn looks_like_phone(v: &str) -> bool {
    let digits = v.bytes().filter(u8::is_ascii_digit).count();
    digits >= 10
        && v.bytes()
            .all(|c| c.is_ascii_digit() || b"+-() .".contains(&c))
}

/// A long run of letters and digits that carries as much randomness as a key or a hash.
fn looks_like_token(part: &str) -> bool {
    if part.len() < 16 || !part.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return false;
    }
    let digits = part.bytes().filter(u8::is_ascii_digit).count();
    let lower = part.bytes().filter(u8::is_ascii_lowercase).count();
    let upper = part.bytes().filter(u8::is_ascii_uppercase).count();
    let hex = part.bytes().all(|c| c.is_ascii_hexdigit());
    if hex && digits >= 2 && digits < part.len() {
        return true;
    }
    let classes = usize::from(digits > 0) + usize::from(lower > 0) + usize::from(upper > 0);
    classes >= 2 && digits >= 2 && shannon_bits_per_char(part) >= 3.5
}

fn shannon_bits_per_char(s: &str) -> f64 {
    let mut counts = [0u32; 256];
    for c in s.bytes() {
        counts[c as usize] += 1;
    }
    let n = s.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use IdentifierKind::*;

    #[test]
    fn identifiers_are_found() {
        for (v, kind) in [
            ("user@example.ru", Email),
            ("ivan.petrov%40mail.ru", Email),
            ("123e4567-e89b-12d3-a456-426614174000", Uuid),
            ("918273645", Id),
            ("order-1234567", Id),
            ("+7(916)123-45-67", Id),
            ("9f86d081884c7d659a2feaa0c55ad015", Token),
            ("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9", Token),
            ("aB3dE5fG7hJ9kL2mN4pQ", Token),
        ] {
            assert_eq!(classify(v), Some(kind), "{v}");
        }
    }

    #[test]
    fn ordinary_slugs_pass() {
        for v in [
            "how-to-configure-nginx",
            "iphone-15-pro-256gb",
            "2024",
            "11",
            "каталог",
            "summer_sale_2026",
            "index.html",
            "ПРОМО-акция",
            "internationalization",
            "spring-sale",
            "newsletter",
        ] {
            assert_eq!(classify(v), None, "{v}");
        }
    }
}
