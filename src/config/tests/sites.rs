//! Rows of the diagnostics table: host names, bindings and actions.

use super::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        // ---- host names and bindings --------------------------------------------------------
        bad_host("host is an IPv4 literal", "10.0.0.1", "is an IP address"),
        bad_host(
            "host is a bracketed IPv6 literal",
            "[::1]",
            "is an IP address",
        ),
        bad_host(
            "host has a bad character",
            "a b.test",
            "label \"a b\" has a character other than letters",
        ),
        bad_host(
            "wildcard not the left-most label",
            "a.*.test",
            "'*' may only be the whole left-most label",
        ),
        bad_host(
            "wildcard not a whole label",
            "f*.x.test",
            "'*' may only be the whole left-most label",
        ),
        case(
            "a misspelt key gets the near known key",
            [
                base(),
                site("a", &["a.test"], &[r#"rooot = "www""#, RESPOND]),
            ]
            .concat(),
            vec![error_fix(
                "site[0].rooot",
                "unknown key \"rooot\"",
                "did you mean \"root\"? known keys here: name, hosts,",
            )],
        ),
        case(
            "an unknown key far from every known key gets only the list",
            [base(), site("a", &["a.test"], &[r#"colour = "red""#, RESPOND])].concat(),
            vec![error_fix(
                "site[0].colour",
                "unknown key \"colour\"",
                "known keys here: name, hosts,",
            )],
        ),
        case(
            "site without hosts",
            [base(), "[[site]]\nname = \"a\"\nrespond = {}\n".to_string()].concat(),
            vec![error("site[0].hosts", "the site has no hosts")],
        ),
        case(
            "host listed twice in one site, spelled differently (warning)",
            [base(), site("a", &["a.test", "A.TEST."], &[RESPOND])].concat(),
            vec![warning("site[0].hosts[1]", "a.test is listed twice")],
        ),
        case(
            "one host claimed by two sites on one listener",
            [
                base(),
                site("a", &["a.test"], &[RESPOND]),
                site("b", &["www.a.test", "a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error(
                "site[1].hosts[1]",
                "host a.test is claimed by site \"a\" (site[0]) and site \"b\" (site[1]) \
                 on listener \"*:8443\"",
            )],
        ),
        case(
            "one host, spelled differently, claimed by two sites",
            [
                base(),
                site("a", &["A.test."], &[RESPOND]),
                site("b", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error(
                "site[1].hosts[0]",
                "host a.test is claimed by site \"a\" (site[0]) and site \"b\" (site[1])",
            )],
        ),
        case(
            "same host on different listeners is fine",
            [
                named_listener("one", "*:8443"),
                named_listener("two", "*:9443"),
                pool("a.pem", "a.key"),
                site("a", &["a.test"], &[RESPOND, r#"listeners = ["one"]"#]),
                site("b", &["a.test"], &[RESPOND, r#"listeners = ["*:9443"]"#]),
            ]
            .concat(),
            vec![],
        ),
        case(
            "site names an unknown listener",
            [
                base(),
                site(
                    "a",
                    &["a.test"],
                    &[RESPOND, r#"listeners = ["*:8443", "nope"]"#],
                ),
            ]
            .concat(),
            vec![error(
                "site[0].listeners[1]",
                "no listener is named \"nope\"",
            )],
        ),
        case(
            "site bound to no listener (warning)",
            [
                base(),
                site("a", &["a.test"], &[RESPOND]),
                site("b", &["b.test"], &[RESPOND, "listeners = []"]),
            ]
            .concat(),
            vec![warning(
                "site[1].listeners",
                "site \"b\" is bound to no listener and will never be served",
            )],
        ),
        case(
            "host on *:port that the IP:port listener does not bind (warning)",
            [
                named_listener("all", "*:8443"),
                named_listener("lo", "127.0.0.1:8443"),
                pool("a.pem", "a.key"),
                pool("wild.pem", "wild.key"),
                site("a", &["a.test"], &[RESPOND, r#"listeners = ["all"]"#]),
                site("b", &["x.b.test"], &[RESPOND]),
            ]
            .concat(),
            vec![warning(
                "site[0].hosts[0]",
                "host a.test is bound on *:8443 but not on 127.0.0.1:8443",
            )],
        ),
        case(
            "duplicate site name",
            [
                base(),
                site("a", &["a.test"], &[RESPOND]),
                site("a", &["www.a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error(
                "site[1].name",
                "name \"a\" is already used by site[0]",
            )],
        ),
        // ---- actions ------------------------------------------------------------------------
        case(
            "site with no action",
            [base(), site("a", &["a.test"], &[])].concat(),
            vec![error("site[0]", "site \"a\" has no action")],
        ),
        case(
            "site with two actions",
            [
                base(),
                site("a", &["a.test"], &[r#"root = "www""#, RESPOND]),
            ]
            .concat(),
            vec![error("site[0]", "site \"a\" has 2 actions: root, respond")],
        ),
        case(
            "proxy settings, every problem with its path",
            [
                base(),
                site(
                    "a",
                    &["a.test"],
                    &[r#"proxy = { upstreams = ["ftp://x:1", "http://127.0.0.1:3000/api", "http://127.0.0.1:0", "http://127.0.0.1:3000", "http://127.0.0.1:3000/"], lb = "random", connect_timeout = "5", response_timeout = "25h", max_fails = -1, trusted_proxies = ["10.0.0.0/8", "nope"], host = "a b", max_body_bytes = -5, retries = 2 }"#],
                ),
                site(
                    "b",
                    &["b.test"],
                    &[r#"proxy = { upstreams = ["http://127.0.0.1:3000"], server_name = "*.x.test", ca = "root.pem", health_check = { path = "healthz", interval = "0s", expect = 200 } }"#],
                ),
                site("c", &["c.test"], &[r#"proxy = { lb = "least_conn" }"#]),
                site("d", &["d.test"], &[r#"proxy = { upstreams = [] }"#]),
            ]
            .concat(),
            vec![
                error("site[0].proxy.retries", "unknown key \"retries\""),
                error("site[0].proxy.upstreams[0]", "is not an http:// or https:// URL"),
                error("site[0].proxy.upstreams[1]", "has a path, query or fragment"),
                error("site[0].proxy.upstreams[2]", "\"0\" is not a port number"),
                warning("site[0].proxy.upstreams[4]", "http://127.0.0.1:3000 is listed twice"),
                error("site[0].proxy.lb", "unknown load balancing \"random\""),
                error("site[0].proxy.connect_timeout", "\"5\" is not a duration"),
                error("site[0].proxy.response_timeout", "\"25h\" is not a duration"),
                error("site[0].proxy.max_fails", "-1 is not between 0 and 1000"),
                error("site[0].proxy.trusted_proxies[1]", "\"nope\" is not an IP address or range"),
                error("site[0].proxy.host", "\"a b\" is not a host or host:port"),
                error("site[0].proxy.max_body_bytes", "-5 is negative"),
                error("site[1].proxy.health_check.expect", "unknown key \"expect\""),
                error("site[1].proxy.server_name", "\"*.x.test\" is a wildcard"),
                warning("site[1].proxy.ca", "ca is used only for https:// upstreams"),
                warning("site[1].proxy.server_name", "server_name is used only for https:// upstreams"),
                error("site[1].proxy.health_check.path", "\"healthz\" is not a request path"),
                error("site[1].proxy.health_check.interval", "\"0s\" is not a duration"),
                error("site[2].proxy", "proxy has no upstreams"),
                error("site[3].proxy.upstreams", "the list of upstreams is empty"),
            ],
        ),
        case(
            "proxy ca file that cannot be loaded",
            [
                base(),
                site(
                    "a",
                    &["a.test"],
                    &[r#"proxy = { upstreams = ["https://127.0.0.1:3000"], ca = "missing.pem" }"#],
                ),
                site(
                    "b",
                    &["www.a.test"],
                    &[r#"proxy = { upstreams = ["https://127.0.0.1:3000"], ca = "garbage.pem" }"#],
                ),
            ]
            .concat(),
            vec![
                error("site[0].proxy.ca", "cannot read {dir}/missing.pem: no such file"),
                error("site[1].proxy.ca", "{dir}/garbage.pem holds no usable CERTIFICATE block"),
            ],
        ),
        case(
            "unknown tls mode",
            [
                base(),
                site("a", &["a.test"], &[r#"tls = "letsencrypt""#, RESPOND]),
            ]
            .concat(),
            vec![error("site[0].tls", "unknown value \"letsencrypt\"")],
        ),
        case(
            "pinned tls without key",
            [
                base(),
                site("a", &["a.test"], &[r#"tls = { cert = "a.pem" }"#, RESPOND]),
            ]
            .concat(),
            vec![error("site[0].tls", "key is missing")],
        ),
        case(
            "pool certificate without cert",
            [
                base(),
                "[[certificate]]\nkey = \"a.key\"\n".to_string(),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error("certificate[1]", "cert is missing")],
        ),
        case(
            "bad redirects",
            [
                base(),
                site("a", &["a.test"], &[r#"redirect = { to = "/elsewhere" }"#]),
                site("b", &["b.test"], &[r#"redirect = { status = 301 }"#]),
                site(
                    "c",
                    &["c.test"],
                    &[r#"redirect = { to = "https://a.test", status = 200 }"#],
                ),
            ]
            .concat(),
            vec![
                error(
                    "site[0].redirect.to",
                    "\"/elsewhere\" is not an absolute http(s) URL",
                ),
                error("site[1].redirect", "redirect has no `to`"),
                error("site[2].redirect.status", "200 is not a redirect status"),
            ],
        ),
        case(
            "bad responds",
            [
                base(),
                site("a", &["a.test"], &[r#"respond = { status = 99 }"#]),
                site(
                    "b",
                    &["b.test"],
                    &[r#"respond = { content_type = "text/plain\n" }"#],
                ),
            ]
            .concat(),
            vec![
                error("site[0].respond.status", "99 is not a final HTTP status"),
                error(
                    "site[1].respond.content_type",
                    "is not a valid header value",
                ),
            ],
        ),
        case(
            "root directory missing",
            [base(), site("a", &["a.test"], &[r#"root = "nowhere""#])].concat(),
            vec![error("site[0].root", "cannot serve {dir}/nowhere")],
        ),
        // ---- client_auth ----------------------------------------------------------------------
        case(
            "client_auth with a CA file serves",
            [base(), site("a", &["a.test"], &[r#"client_auth = { ca = "a.pem", required = false, subject_header = "X-Client-Subject" }"#, RESPOND])].concat(),
            vec![],
        ),
        case(
            "client_auth without ca",
            [base(), site("a", &["a.test"], &["client_auth = { required = true }", RESPOND])].concat(),
            vec![error_fix("site[0].client_auth", "client_auth has no ca", "name the PEM file of the CA")],
        ),
        case(
            "client_auth with a misspelt key",
            [base(), site("a", &["a.test"], &[r#"client_auth = { ca = "a.pem", crls = ["x.crl"] }"#, RESPOND])].concat(),
            vec![error_fix("site[0].client_auth.crls", "unknown key \"crls\"", "did you mean \"crl\"?")],
        ),
        case(
            "client_auth subject header Portico sets itself",
            [base(), site("a", &["a.test"], &[r#"client_auth = { ca = "a.pem", subject_header = "Client-Cert" }"#, RESPOND])].concat(),
            vec![error("site[0].client_auth.subject_header", "\"client-cert\" is a header Portico sets or removes itself")],
        ),
        case(
            "client_auth subject header that is no header name",
            [base(), site("a", &["a.test"], &[r#"client_auth = { ca = "a.pem", subject_header = "x y" }"#, RESPOND])].concat(),
            vec![error("site[0].client_auth.subject_header", "\"x y\" is not a header name")],
        ),
        case(
            "client_auth on a passthrough site",
            [base(), site("p", &["p.test"], &[r#"client_auth = { ca = "a.pem" }"#, r#"passthrough = { backend = "127.0.0.1:9443" }"#])].concat(),
            vec![error_fix("site[0].client_auth", "site \"p\" passes TLS through", "remove client_auth")],
        ),
        case(
            "client_auth CA file missing",
            [base(), site("a", &["a.test"], &[r#"client_auth = { ca = "missing.pem" }"#, RESPOND])].concat(),
            vec![error_fix("site[0].client_auth.files", "cannot read {dir}/missing.pem", "fix the path")],
        ),
        case(
            "client_auth CA file without a certificate",
            [base(), site("a", &["a.test"], &[r#"client_auth = { ca = "a.key" }"#, RESPOND])].concat(),
            vec![error("site[0].client_auth.ca", "{dir}/a.key holds no PEM certificate")],
        ),
        case(
            "client_auth CRL that is not one",
            [base(), site("a", &["a.test"], &[r#"client_auth = { ca = "a.pem", crl = ["garbage.pem"] }"#, RESPOND])].concat(),
            vec![error("site[0].client_auth.crl", "{dir}/garbage.pem is not a certificate revocation list")],
        ),
        case(
            "client_auth CRL file missing",
            [base(), site("a", &["a.test"], &[r#"client_auth = { ca = "a.pem", crl = ["gone.crl"] }"#, RESPOND])].concat(),
            vec![error("site[0].client_auth.files", "cannot read {dir}/gone.crl")],
        ),
    ]
}
