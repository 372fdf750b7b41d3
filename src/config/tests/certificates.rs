//! Rows of the diagnostics table: certificate files, validity, everything at once, nothing wrong.

use super::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        // ---- certificate files --------------------------------------------------------------
        bad_pool_cert_at(
            "certificate file missing",
            "missing.pem",
            "a.key",
            "certificate[0].cert",
            "cannot read the certificate file {dir}/missing.pem: no such file",
        ),
        bad_pool_cert_at(
            "pool key path that is a directory",
            "a.pem",
            "keys",
            "certificate[0].key",
            "cannot read the key file {dir}/keys: is a directory, not a file",
        ),
        bad_pool_cert_at(
            "pool certificate path that is a directory",
            "keys",
            "a.key",
            "certificate[0].cert",
            "cannot read the certificate file {dir}/keys: is a directory, not a file",
        ),
        case(
            "pinned key path that is a directory",
            [
                listener("*:8443"),
                site(
                    "a",
                    &["a.test"],
                    &[r#"tls = { cert = "a.pem", key = "keys" }"#, RESPOND],
                ),
            ]
            .concat(),
            vec![error(
                "site[0].tls.key",
                "cannot read the key file {dir}/keys: is a directory, not a file",
            )],
        ),
        case(
            "the only certificate for a host is missing: both reported, linked",
            [
                listener("*:8443"),
                pool("missing.pem", "a.key"),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![
                error(
                    "certificate[0].cert",
                    "cannot read the certificate file {dir}/missing.pem: no such file",
                ),
                error(
                    "site[0].hosts[0]",
                    "no certificate in the pool covers host a.test (note: certificate[0] \
                     could not be loaded)",
                ),
            ],
        ),
        case(
            "an unknown key in a pinned tls table",
            [
                listener("*:8443"),
                site(
                    "a",
                    &["a.test"],
                    &[r#"tls = { cert = "a.pem", key = "a.key", chain = "x.pem" }"#, RESPOND],
                ),
            ]
            .concat(),
            vec![error("site[0].tls.chain", "unknown key \"chain\"")],
        ),
        case(
            "tls that is neither a mode nor a table",
            [listener("*:8443"), site("a", &["a.test"], &["tls = 5", RESPOND])].concat(),
            vec![error("", "tls is \"internal\", \"acme\", a table")],
        ),
        case(
            "pinned key file missing",
            [
                listener("*:8443"),
                site(
                    "a",
                    &["a.test"],
                    &[r#"tls = { cert = "a.pem", key = "missing.key" }"#, RESPOND],
                ),
            ]
            .concat(),
            vec![error(
                "site[0].tls.key",
                "cannot read the key file {dir}/missing.key: no such file",
            )],
        ),
        Case {
            // Another pool certificate covers the host too: the unreadable key must still
            // stop the configuration, not fall back to the other certificate.
            setup: Some(lock_key),
            ..case(
                "key file unreadable",
                [
                    listener("*:8443"),
                    pool("a.pem", "locked.key"),
                    pool("rsa-a.pem", "rsa-a.key"),
                    site("a", &["a.test"], &[RESPOND]),
                ]
                .concat(),
                vec![error(
                    "certificate[0].key",
                    "cannot read the key file {dir}/locked.key: permission denied",
                )],
            )
        },
        bad_pool_cert_at(
            "certificate file is not PEM",
            "garbage.pem",
            "a.key",
            "certificate[0].cert",
            "the certificate file {dir}/garbage.pem is not a PEM file",
        ),
        bad_pool_cert_at(
            "key file is not PEM",
            "a.pem",
            "garbage.pem",
            "certificate[0].key",
            "the key file {dir}/garbage.pem is not a PEM file",
        ),
        bad_pool_cert_at(
            "key file holds no key (the certificate given as key)",
            "a.pem",
            "a.pem",
            "certificate[0].key",
            "{dir}/a.pem has no private key",
        ),
        case(
            "certificate and key in one file",
            [
                listener("*:8443"),
                pool("a-both.pem", "a-both.pem"),
                pool("a-key-first.pem", "a-key-first.pem"),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![],
        ),
        bad_pool_cert_at(
            "key that names the certificate's public key but whose private part is corrupt",
            "a.pem",
            "a-bad-scalar.key",
            "certificate[0].key",
            "the private key in {dir}/a-bad-scalar.key cannot sign",
        ),
        bad_pool_cert_at(
            "RSA key that names the certificate's public key but whose private part is corrupt",
            "rsa-a.pem",
            "rsa-a-bad-prime.key",
            "certificate[0].key",
            "the private key in {dir}/rsa-a-bad-prime.key cannot sign",
        ),
        bad_pool_cert(
            "certificate and key in one file that do not match",
            "a-other-key.pem",
            "a-other-key.pem",
            "the key in {dir}/a-other-key.pem does not match the certificate in {dir}/a-other-key.pem",
        ),
        bad_pool_cert_at(
            "chain and key in one file, chain not leaf-first",
            "chain-reversed-both.pem",
            "chain-reversed-both.pem",
            "certificate[0].cert",
            "{dir}/chain-reversed-both.pem: the chain is not in leaf-first order: certificate #0 \
             (CN=Portico Test Root) is not issued by the next one (CN=chain leaf)",
        ),
        bad_pool_cert(
            "key does not match the certificate",
            "a.pem",
            "other.key",
            "the key in {dir}/other.key does not match the certificate in {dir}/a.pem",
        ),
        bad_pool_cert_at(
            "unsupported key type (EC on secp256k1)",
            "a.pem",
            "k1.key",
            "certificate[0].key",
            "{dir}/k1.key: unsupported private key",
        ),
        bad_pool_cert_at(
            "chain not leaf-first",
            "chain-reversed.pem",
            "chain.key",
            "certificate[0].cert",
            "{dir}/chain-reversed.pem: the chain is not in leaf-first order: certificate #0 \
             (CN=Portico Test Root) is not issued by the next one (CN=chain leaf)",
        ),
        case(
            "bound host not covered by the pinned certificate",
            [
                listener("*:8443"),
                site(
                    "a",
                    &["a.test", "z.test"],
                    &[r#"tls = { cert = "a.pem", key = "a.key" }"#, RESPOND],
                ),
            ]
            .concat(),
            vec![error(
                "site[0].hosts[1]",
                "host z.test is not covered by the site's certificate {dir}/a.pem \
                 (it covers: a.test, www.a.test)",
            )],
        ),
        case(
            "no pool certificate covers a host",
            [base(), site("a", &["a.test", "nocert.test"], &[RESPOND])].concat(),
            vec![error(
                "site[0].hosts[1]",
                "no certificate in the pool covers host nocert.test",
            )],
        ),
        case(
            "a wildcard certificate does not cover the bare parent",
            [
                listener("*:8443"),
                pool("wild.pem", "wild.key"),
                site("b", &["b.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error(
                "site[0].hosts[0]",
                "no certificate in the pool covers host b.test",
            )],
        ),
        case(
            "a site only on an http listener needs no certificate",
            [
                "[[listener]]\naddress = \"*:8080\"\nkind = \"http\"\n".to_string(),
                site("a", &["nocert.test"], &[RESPOND]),
            ]
            .concat(),
            vec![],
        ),
        // ---- validity -----------------------------------------------------------------------
        case(
            "certificate expired",
            [
                listener("*:8443"),
                pool("expired.pem", "expired.key"),
                site("e", &["e.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error(
                "site[0].hosts[0]",
                "the certificate for e.test ({dir}/expired.pem) expired on",
            )],
        ),
        case(
            "pinned certificate not yet valid",
            [
                listener("*:8443"),
                site(
                    "f",
                    &["f.test"],
                    &[
                        r#"tls = { cert = "future.pem", key = "future.key" }"#,
                        RESPOND,
                    ],
                ),
            ]
            .concat(),
            vec![error(
                "site[0].hosts[0]",
                "the certificate for f.test ({dir}/future.pem) is not valid until",
            )],
        ),
        case(
            "certificate expiring within 14 days (warning)",
            [
                listener("*:8443"),
                pool("soon.pem", "soon.key"),
                site("s", &["s.test"], &[RESPOND]),
            ]
            .concat(),
            vec![warning(
                "site[0].hosts[0]",
                "the certificate for s.test ({dir}/soon.pem) expires in 5 days",
            )],
        ),
        // ---- everything at once -------------------------------------------------------------
        case(
            "many problems in the file, all in one report",
            [
                "colour = 1\n".to_string(),
                "[limits]\nidle_timeout = \"soon\"\n".to_string(),
                named_listener("web", "*:8443"),
                "unknown_sni = \"no_sni\"\n".to_string(),
                named_listener("web", "1.2.3.4"),
                pool("a.pem", "a.key"),
                site("a", &["a.test", "10.0.0.1"], &[RESPOND]),
                site(
                    "b",
                    &["A.TEST"],
                    &[RESPOND, r#"listeners = ["nope", "web"]"#],
                ),
                site("c", &["c.test"], &[]),
                site("d", &["d.test"], &[RESPOND, "listeners = []"]),
            ]
            .concat(),
            vec![
                error("colour", "unknown key \"colour\""),
                error("limits.idle_timeout", "\"soon\" is not a duration"),
                error("listener[0].unknown_sni", "needs a no_sni host"),
                error("listener[1].address", "\"1.2.3.4\" is not \"IP:port\""),
                error("listener[1].name", "name \"web\" is already used"),
                error("site[0].hosts[1]", "is an IP address"),
                error("site[1].listeners[0]", "no listener is named \"nope\""),
                error(
                    "site[1].hosts[0]",
                    "host a.test is claimed by site \"a\" (site[0]) and site \"b\" (site[1])",
                ),
                error("site[2]", "site \"c\" has no action"),
                warning("site[3].listeners", "bound to no listener"),
            ],
        ),
        case(
            "many certificate problems, all in one report",
            [
                listener("*:8443"),
                pool("missing.pem", "a.key"),
                pool("a.pem", "other.key"),
                pool("expired.pem", "expired.key"),
                pool("soon.pem", "soon.key"),
                pool("future.pem", "future.key"),
                site("a", &["a.test"], &[RESPOND]),
                site("e", &["e.test"], &[RESPOND]),
                site("s", &["s.test"], &[RESPOND]),
                site(
                    "p",
                    &["www.a.test", "p.test"],
                    &[r#"tls = { cert = "a.pem", key = "a.key" }"#, RESPOND],
                ),
                site(
                    "g",
                    &["g.test"],
                    &[r#"tls = { cert = "garbage.pem", key = "a.key" }"#, RESPOND],
                ),
                site("f", &["f.test"], &[r#"root = "nowhere""#]),
            ]
            .concat(),
            vec![
                error(
                    "certificate[0].cert",
                    "cannot read the certificate file {dir}/missing.pem",
                ),
                error("certificate[1]", "does not match the certificate"),
                error(
                    "site[0].hosts[0]",
                    "no certificate in the pool covers host a.test (note: certificate[0], \
                     certificate[1] could not be loaded)",
                ),
                error("site[1].hosts[0]", "expired on"),
                warning("site[2].hosts[0]", "expires in 5 days"),
                error("site[3].hosts[1]", "host p.test is not covered"),
                error(
                    "site[4].tls.cert",
                    "the certificate file {dir}/garbage.pem is not a PEM file",
                ),
                error("site[5].root", "cannot serve {dir}/nowhere"),
                error("site[5].hosts[0]", "is not valid until"),
            ],
        ),
        // ---- nothing wrong ------------------------------------------------------------------
        Case {
            setup: Some(make_www),
            ..case("valid multi-site configuration", valid_config(), vec![])
        },
    ]
}
