//! Rows of the diagnostics table: the file itself, listeners and limits.

use super::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        // ---- the file itself ----------------------------------------------------------------
        case(
            "toml syntax error",
            "[[listener]\naddress = \"*:8443\"\n".to_string(),
            vec![error("", "{dir}/portico.toml is not valid")],
        ),
        case(
            "a key set twice is named",
            [
                listener("*:8443"),
                "[[site]]\nname = \"a\"\nname = \"b\"\nhosts = [\"a.test\"]\n".to_string(),
            ]
            .concat(),
            vec![error("", "duplicate key `name`")],
        ),
        case(
            "value of the wrong type",
            [
                listener("*:8443"),
                "[[site]]\nhosts = \"a.test\"\n".to_string(),
            ]
            .concat(),
            vec![error("", "{dir}/portico.toml is not valid")],
        ),
        case(
            "unknown keys everywhere, all reported",
            [
                "colour = \"blue\"\n".to_string(),
                "[limits]\nidle = \"1s\"\n".to_string(),
                "[[listener]]\naddress = \"*:8443\"\nadress = \"*:9443\"\n".to_string(),
                "[[certificate]]\ncert = \"a.pem\"\nkey = \"a.key\"\nchain = \"x.pem\"\n"
                    .to_string(),
                site("a", &["a.test"], &[RESPOND, r#"roots = "www""#]),
                site(
                    "r",
                    &["r.test"],
                    &[r#"redirect = { to = "https://a.test", code = 301, keep_path = true }"#],
                ),
                site(
                    "t",
                    &["t.test"],
                    &[r#"respond = { body = "x", headers = "y" }"#],
                ),
            ]
            .concat(),
            vec![
                error("colour", "unknown key \"colour\""),
                error("limits.idle", "unknown key \"idle\""),
                error_fix(
                    "listener[0].adress",
                    "unknown key \"adress\"",
                    "did you mean \"address\"?",
                ),
                error("certificate[0].chain", "unknown key \"chain\""),
                error_fix(
                    "site[0].roots",
                    "unknown key \"roots\"",
                    "did you mean \"root\"?",
                ),
                error("site[1].redirect.code", "unknown key \"code\""),
                error("site[1].redirect.keep_path", "unknown key \"keep_path\""),
                error("site[2].respond.headers", "unknown key \"headers\""),
                // Certificate checks run too, even though the file has errors.
                error(
                    "site[1].hosts[0]",
                    "no certificate in the pool covers host r.test",
                ),
                error(
                    "site[2].hosts[0]",
                    "no certificate in the pool covers host t.test",
                ),
            ],
        ),
        // ---- listeners ----------------------------------------------------------------------
        case(
            "no listener",
            [pool("a.pem", "a.key"), site("a", &["a.test"], &[RESPOND])].concat(),
            vec![error("listener", "no listener is configured")],
        ),
        case(
            "listener without address",
            [
                "[[listener]]\nname = \"web\"\n".to_string(),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![
                error("listener[0]", "the listener has no address"),
                error(
                    "site[0].hosts[0]",
                    "no certificate in the pool covers host a.test",
                ),
            ],
        ),
        case(
            "passthrough and PROXY protocol settings",
            [
                listener("*:8443"),
                "unknown_sni = \"passthrough\"\nproxy_protocol_from = [\"10.0.0.0/8\", \"nope\"]\n".to_string(),
                named_listener("two", "*:9443"),
                "default_passthrough = { backend = \"127.0.0.1:9\", bogus = 1 }\n".to_string(),
                pool("a.pem", "a.key"),
                site("a", &["a.test"], &[RESPOND]),
                site("p", &["p.test"], &[r#"passthrough = { backend = "nowhere", proxy_protocol = "v3" }"#]),
                site("q", &["q.test"], &[r#"passthrough = { backend = "[::1]:0", nope = 2 }"#]),
                site("r", &["r.test"], &[r#"passthrough = { proxy_protocol = "v1" }"#]),
            ]
            .concat(),
            vec![
                error("listener[0].unknown_sni", "needs default_passthrough"),
                error("listener[0].proxy_protocol_from[1]", "\"nope\" is not an IP address or range"),
                error("listener[1].default_passthrough.bogus", "unknown key \"bogus\""),
                warning("listener[1].default_passthrough", "used only with unknown_sni = \"passthrough\""),
                error("site[1].passthrough.proxy_protocol", "unknown PROXY protocol version \"v3\""),
                error("site[2].passthrough.nope", "unknown key \"nope\""),
                error("site[2].passthrough.backend", "\"[::1]:0\" is not \"host:port\""),
                error("site[3].passthrough", "no backend"),
            ],
        ),
        bad_address("port 0", "*:0", "port 0 is not a port"),
        bad_address("port 0 on an IP", "127.0.0.1:0", "port 0 is not a port"),
        case(
            "limits too large or too small",
            [
                "[limits]\nhandshake_timeout = \"48h\"\nmax_header_bytes = 4096\n".to_string(),
                base(),
            ]
            .concat(),
            vec![
                error(
                    "limits.handshake_timeout",
                    "is not a duration between 1ms and 24h",
                ),
                error("limits.max_header_bytes", "4096 is out of range"),
            ],
        ),
        case(
            "redirect target with a query",
            [
                listener("*:8443"),
                pool("a.pem", "a.key"),
                site(
                    "a",
                    &["a.test"],
                    &[r#"redirect = { to = "https://b.test/?x=1" }"#],
                ),
            ]
            .concat(),
            vec![error("site[0].redirect.to", "without a query")],
        ),
        bad_address(
            "address is a word",
            "nowhere",
            r#""nowhere" is not "IP:port""#,
        ),
        bad_address(
            "address without port",
            "1.2.3.4",
            r#""1.2.3.4" is not "IP:port""#,
        ),
        bad_address(
            "port out of range",
            "*:99999",
            r#""99999" is not a port number"#,
        ),
        bad_address(
            "unspecified IPv4 address",
            "0.0.0.0:8443",
            r#"to accept on every address write "*:8443""#,
        ),
        bad_address(
            "unspecified IPv6 address",
            "[::]:8443",
            r#"to accept on every address write "*:8443""#,
        ),
        case(
            "duplicate listener address",
            [
                named_listener("one", "*:8443"),
                named_listener("two", "*:8443"),
                pool("a.pem", "a.key"),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error(
                "listener[1].address",
                "address *:8443 is already used by listener[0]",
            )],
        ),
        case(
            "duplicate address spelled differently, unnamed: one error, not two",
            [
                listener("127.0.0.1:8443"),
                listener("[::ffff:127.0.0.1]:8443"),
                pool("a.pem", "a.key"),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error(
                "listener[1].address",
                "address 127.0.0.1:8443 is already used by listener[0]",
            )],
        ),
        case(
            "duplicate listener name",
            [
                named_listener("web", "*:8443"),
                named_listener("web", "*:9443"),
                pool("a.pem", "a.key"),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error(
                "listener[1].name",
                "name \"web\" is already used by listener[0]",
            )],
        ),
        case(
            "unknown listener kind",
            [
                "[[listener]]\naddress = \"*:8443\"\nkind = \"tls\"\n".to_string(),
                pool("a.pem", "a.key"),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error("listener[0].kind", "unknown kind \"tls\"")],
        ),
        case(
            "no_sni names a host not bound on that listener",
            [
                named_listener("one", "*:8443"),
                "no_sni = \"b.test\"\n".to_string(),
                named_listener("two", "*:9443"),
                pool("a.pem", "a.key"),
                pool("wild.pem", "wild.key"),
                site("a", &["a.test"], &[RESPOND, r#"listeners = ["one"]"#]),
                site("b", &["b.x.test"], &[RESPOND, r#"listeners = ["two"]"#]),
            ]
            .concat(),
            vec![
                error(
                    "listener[0].no_sni",
                    "b.test is not bound to any site on listener \"one\"",
                ),
                error(
                    "site[1].hosts[0]",
                    "no certificate in the pool covers host b.x.test",
                ),
            ],
        ),
        case(
            "no_sni is a wildcard",
            [
                listener("*:8443"),
                "no_sni = \"*.b.test\"\n".to_string(),
                pool("wild.pem", "wild.key"),
                site("b", &["*.b.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error("listener[0].no_sni", "\"*.b.test\" is a wildcard")],
        ),
        case(
            "no_sni is not a host name",
            [
                listener("*:8443"),
                "no_sni = \"10.0.0.1\"\n".to_string(),
                pool("a.pem", "a.key"),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error("listener[0].no_sni", "is an IP address")],
        ),
        case(
            "unknown_sni = no_sni without no_sni",
            [
                listener("*:8443"),
                "unknown_sni = \"no_sni\"\n".to_string(),
                pool("a.pem", "a.key"),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error(
                "listener[0].unknown_sni",
                "unknown_sni = \"no_sni\" needs a no_sni host",
            )],
        ),
        case(
            "unknown_sni has an unknown value",
            [
                listener("*:8443"),
                "unknown_sni = \"fallback\"\n".to_string(),
                pool("a.pem", "a.key"),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error(
                "listener[0].unknown_sni",
                "unknown value \"fallback\"",
            )],
        ),
        case(
            "alpn: unsupported protocol, and an empty list",
            [
                listener("*:8443"),
                "alpn = [\"h2\", \"spdy/3\"]\n".to_string(),
                listener("*:9443"),
                "alpn = []\n".to_string(),
                pool("a.pem", "a.key"),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![
                error("listener[0].alpn[1]", "unsupported protocol \"spdy/3\""),
                error("listener[1].alpn", "the list is empty"),
            ],
        ),
        case(
            "listener max_connections is not positive",
            [
                listener("*:8443"),
                "max_connections = 0\n".to_string(),
                pool("a.pem", "a.key"),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error(
                "listener[0].max_connections",
                "0 is not between 1 and 10000000",
            )],
        ),
        case(
            "http3 on an http listener is refused, with the fix",
            [
                base(),
                "[[listener]]\naddress = \"*:8080\"\nkind = \"http\"\nhttp3 = true\n"
                    .to_string(),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error_fix(
                "listener[1].http3",
                "http3 needs TLS: an http listener cannot serve HTTP/3",
                "put http3 = true on the https listener of this port's sites, or remove it",
            )],
        ),
        case(
            "limits.max_concurrent_streams out of range",
            [
                "[limits]\nmax_concurrent_streams = 0\n".to_string(),
                base(),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error(
                "limits.max_concurrent_streams",
                "0 is not between 1 and 10000",
            )],
        ),
        case(
            "TLS settings on an http listener (warning)",
            [
                base(),
                "[[listener]]\naddress = \"*:8080\"\nkind = \"http\"\nalpn = [\"h2\"]\n"
                    .to_string(),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![warning(
                "listener[1]",
                "no_sni, unknown_sni, default_passthrough and alpn mean nothing on an http listener",
            )],
        ),
        // ---- limits -------------------------------------------------------------------------
        case(
            "bad limits durations",
            [
                "[limits]\nidle_timeout = \"soon\"\nhandshake_timeout = \"10 minutes\"\n\
                 drain_timeout = \"0s\"\n"
                    .to_string(),
                base(),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![
                error("limits.idle_timeout", "\"soon\" is not a duration"),
                error(
                    "limits.handshake_timeout",
                    "\"10 minutes\" is not a duration",
                ),
                error("limits.drain_timeout", "\"0s\" is not a duration"),
            ],
        ),
        case(
            "limits out of range",
            [
                "[limits]\nmax_header_bytes = 10\nmax_headers = 0\nmax_connections = -1\n"
                    .to_string(),
                base(),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![
                error("limits.max_header_bytes", "10 is out of range"),
                error("limits.max_headers", "0 is not between 1 and 1000"),
                error("limits.max_connections", "-1 is not between 1 and 10000000"),
            ],
        ),
    ]
}
