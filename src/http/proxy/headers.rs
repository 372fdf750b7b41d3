//! Header rewriting between client and upstream: hop-by-hop headers removed, forwarded
//! headers (`X-Forwarded-*` and RFC 7239 `Forwarded`) added.
//!
//! Incoming forwarded headers are kept only from trusted proxies; from anyone else they are
//! replaced, so a client cannot claim to be someone else to the upstream.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

pub(super) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(super) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(super) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Whether the `Connection` header lists `token` (case-insensitive).
pub(super) fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Whether `TE` lists `trailers`: the client will take trailers, so the upstream may send
/// them (gRPC servers require it).
pub(super) fn te_has_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            let coding = t.split(';').next().unwrap_or_default();
            coding.trim().eq_ignore_ascii_case("trailers")
        })
}

/// Removes the headers that belong to one connection, not to the message (RFC 9110 7.6.1):
/// `Connection` and every header it names, `Keep-Alive`, `Proxy-*`, `TE`, `Trailer`,
/// `Transfer-Encoding` and `Upgrade`. With `upgrade`, `Upgrade` and `Connection: upgrade`
/// stay, because the upgrade is what is being forwarded.
pub(super) fn remove_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            if !(upgrade && name == header::UPGRADE) {
                headers.remove(&name);
            }
        }
    }
    for name in [
        header::CONNECTION,
        HeaderName::from_static("keep-alive"),
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
    ] {
        headers.remove(&name);
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
    let is_proxy = |k: &HeaderName| k.as_str().starts_with("proxy-") || k.as_str() == "proxy";
    if headers.keys().any(is_proxy) {
        let proxy: Vec<HeaderName> = headers.keys().filter(|k| is_proxy(k)).cloned().collect();
        for name in proxy {
            headers.remove(&name);
        }
    }
}

/// RFC 9440's headers: the client's certificate and the rest of its chain.
pub(super) static CLIENT_CERT: HeaderName = HeaderName::from_static("client-cert");
pub(super) static CLIENT_CERT_CHAIN: HeaderName = HeaderName::from_static("client-cert-chain");

/// What the upstream is told about the client's certificate.
#[derive(Clone, Copy, Default)]
pub struct ClientCert<'a> {
    /// The certificate the connection's client-auth policy verified, if any.
    pub identity: Option<&'a crate::tls::client_auth::ClientIdentity>,
    /// The site's `client_auth.subject_header`.
    pub subject_header: Option<&'a HeaderName>,
}

/// Removes any `Client-Cert`, `Client-Cert-Chain` and subject header the client sent (a
/// client never speaks for its own certificate), then sets them from the verified
/// certificate, if there is one.
pub(super) fn set_client_cert(headers: &mut HeaderMap, cert: &ClientCert<'_>) {
    headers.remove(&CLIENT_CERT);
    headers.remove(&CLIENT_CERT_CHAIN);
    if let Some(name) = cert.subject_header {
        headers.remove(name);
    }
    let Some(id) = cert.identity else {
        return;
    };
    headers.insert(CLIENT_CERT.clone(), id.cert_header.clone());
    if let Some(chain) = &id.chain_header {
        headers.insert(CLIENT_CERT_CHAIN.clone(), chain.clone());
    }
    if let Some(name) = cert.subject_header {
        headers.insert(name.clone(), id.subject_header.clone());
    }
}

/// What the upstream is told about the client.
pub(super) struct Forward<'a> {
    pub(super) client: IpAddr,
    pub(super) proto: &'static str,
    /// The host the client asked for, as it sent it (with a port if it sent one).
    pub(super) host: Option<&'a str>,
    /// The direct peer is a trusted proxy: its forwarded headers are kept and extended.
    pub(super) trusted: bool,
}

fn set(headers: &mut HeaderMap, name: &HeaderName, value: &str) {
    // Every part is an IP, a checked host or a fixed token; a failure would be a bug, and
    // dropping the header is safer than sending a wrong one.
    match HeaderValue::from_str(value) {
        Ok(v) => {
            headers.insert(name.clone(), v);
        }
        Err(_) => {
            headers.remove(name);
        }
    }
}

/// Adds `X-Forwarded-For`, `X-Forwarded-Proto`, `X-Forwarded-Host` and `Forwarded`.
///
/// This runs for every proxied request, so each value is written once into one buffer,
/// without `format!`: formatting an address through `Display` cost more than the rest of
/// this function.
pub(super) fn add_forwarded(headers: &mut HeaderMap, f: &Forward<'_>) {
    let client = f.client.to_canonical();
    let mut ip = String::with_capacity(40);
    push_ip(&mut ip, client);
    let mut value = String::with_capacity(64);

    if f.trusted {
        append_prior(&mut value, headers, &X_FORWARDED_FOR);
    }
    value.push_str(&ip);
    set(headers, &X_FORWARDED_FOR, &value);

    if !(f.trusted && headers.contains_key(&X_FORWARDED_PROTO)) {
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(f.proto));
    }
    if !(f.trusted && headers.contains_key(&X_FORWARDED_HOST)) {
        match f.host {
            Some(h) => set(headers, &X_FORWARDED_HOST, h),
            None => {
                headers.remove(&X_FORWARDED_HOST);
            }
        }
    }

    // RFC 7239: an IPv6 node is quoted and bracketed; host is quoted because a port's ':'
    // is not a token character.
    value.clear();
    if f.trusted {
        append_prior(&mut value, headers, &header::FORWARDED);
    }
    match client {
        IpAddr::V4(_) => {
            value.push_str("for=");
            value.push_str(&ip);
        }
        IpAddr::V6(_) => {
            value.push_str("for=\"[");
            value.push_str(&ip);
            value.push_str("]\"");
        }
    }
    if let Some(h) = f.host {
        value.push_str(";host=\"");
        value.push_str(h);
        value.push('"');
    }
    value.push_str(";proto=");
    value.push_str(f.proto);
    set(headers, &header::FORWARDED, &value);
}

/// Writes `ip` as `Display` does: an IPv4 address by hand (the common case, and the costly
/// one through the formatting machinery), an IPv6 one through `Display`.
fn push_ip(out: &mut String, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out.push('.');
                }
                if octet >= 100 {
                    out.push(char::from(b'0' + octet / 100));
                }
                if octet >= 10 {
                    out.push(char::from(b'0' + octet / 10 % 10));
                }
                out.push(char::from(b'0' + octet % 10));
            }
        }
        IpAddr::V6(v6) => {
            use std::fmt::Write as _;
            let _ = write!(out, "{v6}");
        }
    }
}

/// Writes every value of `name` joined with ", ", and a final ", " when there was any
/// (several header lines are one list).
fn append_prior(out: &mut String, headers: &HeaderMap, name: &HeaderName) {
    for v in headers.get_all(name).iter().filter_map(|v| v.to_str().ok()) {
        out.push_str(v);
        out.push_str(", ");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "192.168.100.255",
            "9.99.100.199",
            "::1",
            "2001:db8::8:800:200c:417a",
        ] {
            let ip: IpAddr = ip.parse().expect("test address");
            let mut out = String::new();
            push_ip(&mut out, ip);
            assert_eq!(out, ip.to_string());
        }
    }

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = map(&[
            ("connection", "keep-alive, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-authorization", "Basic x"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-kept", "yes"),
        ]);
        remove_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h["x-kept"], "yes");
    }

    #[test]
    fn te_trailers_is_found_among_other_codings() {
        assert!(te_has_trailers(&map(&[("te", "gzip;q=0.5, Trailers")])));
        assert!(te_has_trailers(&map(&[
            ("te", "deflate"),
            ("te", "trailers")
        ])));
        assert!(!te_has_trailers(&map(&[("te", "gzip, trailersx")])));
        assert!(!te_has_trailers(&map(&[])));
    }

    #[test]
    fn upgrade_headers_stay_for_upgrades() {
        let mut h = map(&[
            ("connection", "Upgrade, x-a"),
            ("upgrade", "websocket"),
            ("x-a", "1"),
        ]);
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
        assert!(!h.contains_key("x-a"));
    }

    #[test]
    fn forwarded_from_untrusted_peer_is_replaced() {
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "http"),
            ("x-forwarded-host", "evil.test"),
            ("forwarded", "for=6.6.6.6"),
        ]);
        let f = Forward {
            client: "2001:db8::1".parse().expect("ip"),
            proto: "https",
            host: Some("a.test:8443"),
            trusted: false,
        };
        add_forwarded(&mut h, &f);
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
        assert_eq!(h["x-forwarded-proto"], "https");
        assert_eq!(h["x-forwarded-host"], "a.test:8443");
        assert_eq!(
            h["forwarded"],
            "for=\"[2001:db8::1]\";host=\"a.test:8443\";proto=https"
        );
    }

    #[test]
    fn forwarded_from_trusted_peer_is_extended() {
        let mut h = map(&[
            ("x-forwarded-for", "198.51.100.1"),
            ("x-forwarded-for", "198.51.100.2"),
            ("x-forwarded-proto", "http"),
            ("forwarded", "for=198.51.100.1"),
        ]);
        let f = Forward {
            client: "10.0.0.5".parse().expect("ip"),
            proto: "https",
            host: Some("a.test"),
            trusted: true,
        };
        add_forwarded(&mut h, &f);
        assert_eq!(h["x-forwarded-for"], "198.51.100.1, 198.51.100.2, 10.0.0.5");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "a.test");
        assert_eq!(
            h["forwarded"],
            "for=198.51.100.1, for=10.0.0.5;host=\"a.test\";proto=https"
        );
    }
}
