//! Host names: the one place where names are normalized and wildcards are matched.
//!
//! Every host name Portico compares — from the configuration, from a certificate's SAN list,
//! from a client's SNI or `Host` header — goes through [`HostName::parse`] first, so two
//! spellings of one name can never be treated as two names. IP literals are never host names.

use std::fmt;
use std::net::IpAddr;

/// A normalized DNS host name: ASCII lowercase A-labels, no trailing dot, possibly a wildcard
/// whose `*` is the whole left-most label.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostName(Box<str>);

/// Why a string is not a host name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("{0} is an IP address, not a host name")]
    IpLiteral(String),
    #[error("the name is longer than 253 characters")]
    TooLong,
    #[error("label {0:?} is empty or longer than 63 characters")]
    BadLabelLength(String),
    #[error("label {0:?} has a character other than letters, digits, '-' or '_'")]
    BadCharacter(String),
    #[error("label {0:?} starts or ends with '-'")]
    BadHyphen(String),
    #[error("'*' may only be the whole left-most label, as in *.example.com")]
    BadWildcard,
    #[error("a wildcard needs at least two labels after '*', as in *.example.com")]
    WildcardTooBroad,
    #[error("the name is not valid IDNA: {0}")]
    Idna(String),
}

impl HostName {
    /// Normalizes `input`: ASCII lowercase, one trailing dot removed, Unicode converted to
    /// A-labels. Rejects IP literals, bad characters and misplaced wildcards.
    pub fn parse(input: &str) -> Result<HostName, NameError> {
        let trimmed = input.strip_suffix('.').unwrap_or(input);
        if trimmed.is_empty() {
            return Err(NameError::Empty);
        }
        let unbracketed = trimmed
            .strip_prefix('[')
            .and_then(|s| s.strip_suffix(']'))
            .unwrap_or(trimmed);
        // Only something ending in a digit (IPv4) or holding a ':' (IPv6) can be an address;
        // checking that first spares every ordinary name the two address parsers.
        let may_be_ip =
            unbracketed.ends_with(|c: char| c.is_ascii_digit()) || unbracketed.contains(':');
        if may_be_ip && unbracketed.parse::<IpAddr>().is_ok() {
            return Err(NameError::IpLiteral(input.to_string()));
        }
        let ascii = if trimmed.is_ascii() {
            trimmed.to_ascii_lowercase()
        } else {
            // The wildcard label is not IDNA input; convert the rest only.
            let (star, rest) = match trimmed.strip_prefix("*.") {
                Some(rest) => ("*.", rest),
                None => ("", trimmed),
            };
            let converted =
                idna::domain_to_ascii(rest).map_err(|e| NameError::Idna(format!("{e:?}")))?;
            format!("{star}{converted}")
        };
        check_ascii(&ascii, input)?;
        Ok(HostName(ascii.into_boxed_str()))
    }

    /// The catch-all host `*` of a site's `hosts`: every name no other site binds on the
    /// listener, served with the pool's certificate for it. It is no DNS name and covers
    /// nothing; only the route table gives it a meaning.
    pub fn catch_all() -> HostName {
        HostName("*".into())
    }

    /// True for the catch-all host `*`.
    pub fn is_catch_all(&self) -> bool {
        &*self.0 == "*"
    }

    /// The normalized name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// True for `*.example.com`.
    pub fn is_wildcard(&self) -> bool {
        self.0.starts_with("*.")
    }

    /// The wildcard that would cover this name: `a.example.com` -> `*.example.com`.
    /// None for wildcards themselves and for names of fewer than three labels (a wildcard
    /// must keep at least two labels after `*`).
    pub fn parent_wildcard(&self) -> Option<HostName> {
        if self.is_wildcard() {
            return None;
        }
        let (_, rest) = self.0.split_once('.')?;
        if !rest.contains('.') {
            return None;
        }
        Some(HostName(format!("*.{rest}").into_boxed_str()))
    }

    /// The wildcards above this name's parent: `a.b.example.com` -> `*.example.com`. None
    /// of them covers the name (a wildcard covers exactly one label), but nginx's
    /// `server_name *.example.com` matches it, so they are what an operator coming from
    /// nginx may have meant; `explain` names them. Nearest first; each keeps at least two
    /// labels after `*`. Nothing resolves with them.
    pub fn deeper_wildcards(&self) -> Vec<HostName> {
        if self.is_wildcard() {
            return Vec::new();
        }
        let mut out = Vec::new();
        // Skip the name's own left-most label and its parent's: `*.parent` covers the name.
        let mut rest = self.0.split_once('.').and_then(|(_, r)| r.split_once('.'));
        while let Some((_, tail)) = rest {
            if !tail.contains('.') {
                break;
            }
            out.push(HostName(format!("*.{tail}").into_boxed_str()));
            rest = tail.split_once('.');
        }
        out
    }

    /// Whether a certificate or binding for `self` (exact or wildcard) covers `name`.
    /// A wildcard covers exactly one left-most label; it never covers the bare parent.
    pub fn covers(&self, name: &HostName) -> bool {
        self == name || (!name.is_wildcard() && self.covers_name(name.as_str()))
    }

    /// [`HostName::covers`] for a name in normal form that is not a wildcard (see
    /// [`is_normal_name`]), which need not be made a `HostName` first.
    pub fn covers_name(&self, name: &str) -> bool {
        if *self.0 == *name {
            return true;
        }
        match self.0.strip_prefix('*') {
            Some(suffix) => name
                .split_once('.')
                .is_some_and(|(_, rest)| rest.len() + 1 == suffix.len() && suffix[1..] == *rest),
            None => false,
        }
    }
}

impl fmt::Display for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for HostName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostName({})", self.0)
    }
}

/// Lets maps keyed by `HostName` be searched with a `&str` already in normal form, without
/// building a `HostName` (the handshake path's lookups). `Hash` and `Eq` agree with `str`'s,
/// as `Borrow` requires: both are derived from the inner string.
impl std::borrow::Borrow<str> for HostName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for HostName {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        HostName::parse(s)
    }
}

/// The checks on a name already lowercase ASCII: length, labels, the wildcard's place, and
/// a last label of digits (which resolvers read as an IPv4 address). `input` is the name
/// as given, for the error.
fn check_ascii(ascii: &str, input: &str) -> Result<(), NameError> {
    if ascii.len() > 253 {
        return Err(NameError::TooLong);
    }
    let labels = ascii.split('.');
    let mut first = true;
    let mut count = 0;
    let mut wildcard = false;
    for label in labels {
        count += 1;
        if label == "*" && first {
            wildcard = true;
            first = false;
            continue;
        }
        first = false;
        if label.contains('*') {
            return Err(NameError::BadWildcard);
        }
        if label.is_empty() || label.len() > 63 {
            return Err(NameError::BadLabelLength(label.to_string()));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(NameError::BadCharacter(label.to_string()));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(NameError::BadHyphen(label.to_string()));
        }
    }
    if wildcard && count < 3 {
        return Err(NameError::WildcardTooBroad);
    }
    // A name whose last label is all digits would be read as an IPv4 address by many
    // resolvers; reject it like an IP literal.
    if ascii
        .rsplit('.')
        .next()
        .is_some_and(|l| l.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(NameError::IpLiteral(input.to_string()));
    }
    Ok(())
}

/// Whether `s` is a host name exactly as [`HostName::parse`] would return it (lowercase
/// A-labels, no trailing dot) and not a wildcard: a request's `Host` usually is, and then
/// it can be used as it is, without a normalized copy.
pub fn is_normal_name(s: &str) -> bool {
    // One pass over the bytes: this runs for every request. A test checks that it agrees
    // with `HostName::parse`.
    if s.is_empty() || s.len() > 253 {
        return false;
    }
    let mut label = 0usize;
    let mut prev = b'.';
    let mut digits_only = true;
    for &c in s.as_bytes() {
        match c {
            b'.' => {
                if label == 0 || prev == b'-' {
                    return false;
                }
                label = 0;
                digits_only = true;
            }
            b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' => {
                if c == b'-' && label == 0 {
                    return false;
                }
                label += 1;
                if label > 63 {
                    return false;
                }
                digits_only &= c.is_ascii_digit();
            }
            _ => return false,
        }
        prev = c;
    }
    // Not ending in '.' or '-', and a last label of digits reads as an IPv4 address.
    label > 0 && prev != b'-' && !digits_only
}

/// Parses the host part of a `Host` header or `:authority`: strips the port and IPv6
/// brackets. Returns None for IP literals and malformed values.
pub fn host_from_authority(authority: &str) -> Option<HostName> {
    let host = authority_host(authority)?;
    let name = HostName::parse(host).ok()?;
    // A request names one host; a wildcard in Host is not a name.
    (!name.is_wildcard()).then_some(name)
}

/// The host in `host[:port]`, as written; None for an IPv6 literal (never a host name) or
/// a port that is not digits.
pub fn authority_host(authority: &str) -> Option<&str> {
    if authority.starts_with('[') {
        return None;
    }
    match authority.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => Some(h),
        Some(_) => None,
        None => Some(authority),
    }
}

/// Whether two `host[:port]` authorities name the same origin: the same host (names
/// compared in normal form, IP literals as written, ignoring case) and the same port, a
/// missing port being `default_port`. Used to judge a request that names its host twice
/// (`Host` and the target's or `:authority`).
pub fn same_authority(a: &str, b: &str, default_port: u16) -> bool {
    if a == b {
        return true;
    }
    fn split(authority: &str) -> Option<(&str, Option<u16>)> {
        let (host, port) = match authority.rfind(':') {
            Some(i) if !authority[i..].contains(']') => {
                (&authority[..i], Some(&authority[i + 1..]))
            }
            _ => (authority, None),
        };
        let port = match port {
            Some(p) => Some(p.parse().ok()?),
            None => None,
        };
        Some((host, port))
    }
    let (Some((host_a, port_a)), Some((host_b, port_b))) = (split(a), split(b)) else {
        return false;
    };
    if port_a.unwrap_or(default_port) != port_b.unwrap_or(default_port) {
        return false;
    }
    match (HostName::parse(host_a), HostName::parse(host_b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => host_a.eq_ignore_ascii_case(host_b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn n(s: &str) -> HostName {
        HostName::parse(s).expect("valid test name")
    }

    #[test]
    fn same_authority_compares_hosts_in_normal_form_and_default_ports() {
        for (a, b, same) in [
            ("a.test", "a.test", true),
            ("A.Test.", "a.test", true),
            ("a.test:443", "a.test", true),
            ("a.test:8443", "a.test", false),
            ("a.test:8443", "A.TEST:8443", true),
            ("a.test", "b.test", false),
            ("[::1]:443", "[::1]", true),
            ("[::1]:8443", "[::1]", false),
            ("127.0.0.1", "127.0.0.1:443", true),
            ("a.test:x", "a.test", false),
        ] {
            assert_eq!(same_authority(a, b, 443), same, "{a} vs {b}");
        }
    }

    #[test]
    fn normalizes_case_trailing_dot_and_unicode() {
        assert_eq!(n("Site1.Example.TEST.").as_str(), "site1.example.test");
        assert_eq!(n("bücher.example").as_str(), "xn--bcher-kva.example");
        assert_eq!(n("*.Bücher.example").as_str(), "*.xn--bcher-kva.example");
    }

    #[test]
    fn rejects_bad_names() {
        let cases = [
            ("", NameError::Empty),
            (".", NameError::Empty),
            ("127.0.0.1", NameError::IpLiteral("127.0.0.1".into())),
            ("::1", NameError::IpLiteral("::1".into())),
            ("[::1]", NameError::IpLiteral("[::1]".into())),
            ("a..b", NameError::BadLabelLength("".into())),
            ("a b.test", NameError::BadCharacter("a b".into())),
            ("-a.test", NameError::BadHyphen("-a".into())),
            ("a.*.test", NameError::BadWildcard),
            ("f*.test.x", NameError::BadWildcard),
            ("*.test", NameError::WildcardTooBroad),
            ("*", NameError::WildcardTooBroad),
            ("a.123", NameError::IpLiteral("a.123".into())),
        ];
        for (input, want) in cases {
            assert_eq!(HostName::parse(input), Err(want), "input {input:?}");
        }
        assert_eq!(
            HostName::parse(&"a".repeat(64)),
            Err(NameError::BadLabelLength("a".repeat(64)))
        );
        let long = vec!["abcdefghi"; 30].join(".");
        assert_eq!(HostName::parse(&long), Err(NameError::TooLong));
    }

    #[test]
    fn wildcard_covers_exactly_one_label() {
        let w = n("*.x.test");
        assert!(w.covers(&n("a.x.test")));
        assert!(!w.covers(&n("a.b.x.test")));
        assert!(!w.covers(&n("x.test")));
        assert!(!w.covers(&n("a.y.test")));
        assert!(!w.covers(&n("ax.test")));
        assert!(n("a.x.test").covers(&n("a.x.test")));
        assert!(!n("a.x.test").covers(&n("b.x.test")));
        assert_eq!(n("a.x.test").parent_wildcard(), Some(n("*.x.test")));
        assert_eq!(n("x.test").parent_wildcard(), None);
    }

    #[test]
    fn deeper_wildcards_are_those_nginx_would_match_and_portico_does_not() {
        assert_eq!(
            n("z.x.w.example").deeper_wildcards(),
            vec![n("*.w.example")]
        );
        assert_eq!(
            n("a.b.c.d.test").deeper_wildcards(),
            vec![n("*.c.d.test"), n("*.d.test")]
        );
        assert!(n("x.w.example").deeper_wildcards().is_empty());
        assert!(n("w.example").deeper_wildcards().is_empty());
        assert!(n("*.x.w.example").deeper_wildcards().is_empty());
        for w in n("z.y.x.w.example").deeper_wildcards() {
            assert!(!w.covers(&n("z.y.x.w.example")), "{w}");
        }
    }

    #[test]
    fn authority_parsing() {
        assert_eq!(host_from_authority("Site.Test:8443"), Some(n("site.test")));
        assert_eq!(host_from_authority("site.test."), Some(n("site.test")));
        assert_eq!(host_from_authority("[::1]:443"), None);
        assert_eq!(host_from_authority("127.0.0.1:443"), None);
        assert_eq!(host_from_authority("a.test:x"), None);
        assert_eq!(host_from_authority("*.a.test"), None);
    }

    proptest! {
        #[test]
        fn normalization_is_idempotent(s in "[a-zA-Z0-9-]{1,10}(\\.[a-zA-Z0-9-]{1,10}){0,4}\\.?") {
            if let Ok(name) = HostName::parse(&s) {
                prop_assert_eq!(HostName::parse(name.as_str()), Ok(name.clone()));
                prop_assert_eq!(HostName::parse(&s.to_uppercase()), Ok(name));
            }
        }

        #[test]
        fn wildcard_covers_iff_parent_matches(label in "[a-z0-9]{1,8}", a in "[a-z]{1,8}", b in "[a-z]{1,8}", c in "[a-z]{1,8}") {
            let name = n(&format!("{label}.{a}.{b}"));
            let w = n(&format!("*.{c}.{b}"));
            prop_assert_eq!(w.covers(&name), a == c);
            let deeper = n(&format!("{label}.{label}.{a}.{b}"));
            prop_assert!(!w.covers(&deeper));
            prop_assert_eq!(name.parent_wildcard().map(|p| p.covers(&name)), Some(true));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,80}") {
            let _ = HostName::parse(&s);
            let _ = host_from_authority(&s);
        }

        // The request path uses a Host as it came when is_normal_name says so: that must
        // be exactly when parsing would give the same, non-wildcard name.
        #[test]
        fn is_normal_name_is_parse_unchanged(s in "[a-zA-Z0-9._*-]{0,70}|[a-z0-9-]{1,64}(\\.[a-z0-9_-]{0,64}){0,4}\\.?") {
            let same = HostName::parse(&s).is_ok_and(|n| n.as_str() == s && !n.is_wildcard());
            prop_assert_eq!(is_normal_name(&s), same, "{:?}", s);
        }
    }
}
