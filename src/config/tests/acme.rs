//! Rows of the diagnostics table: the [acme] table.

use super::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        // ---- ACME ------------------------------------------------------------------------------
        // ---- on-demand TLS ----------------------------------------------------------------------
        case(
            "on_demand on the catch-all site: accepted",
            [
                "[acme]\ndirectory = \"https://acme.test/dir\"\n".to_string(),
                base(),
                site("customers", &["*"], &[r#"tls = { acme = true, on_demand = { permission = "http://127.0.0.1:3000/allowed", wait = "3s", allowed_ttl = "2h", refused_ttl = "5m", cache_entries = 1000, max_orders = 2, orders_per_hour = 10 } }"#, RESPOND]),
            ]
            .concat(),
            vec![],
        ),
        case(
            "on_demand on a site that is not the catch-all",
            [
                "[acme]\ndirectory = \"https://acme.test/dir\"\n".to_string(),
                base(),
                site("a", &["a.test"], &[r#"tls = { acme = true, on_demand = { permission = "http://127.0.0.1:3000/allowed" } }"#, RESPOND]),
            ]
            .concat(),
            vec![error("site[0].tls.on_demand", "is not the catch-all site")],
        ),
        case(
            "on_demand without an [acme] table",
            [
                base(),
                site("customers", &["*"], &[r#"tls = { acme = true, on_demand = { permission = "http://127.0.0.1:3000/allowed" } }"#, RESPOND]),
            ]
            .concat(),
            vec![error("site[0].tls.on_demand", "there is no [acme] table")],
        ),
        case(
            "on_demand without acme = true, and acme = true without on_demand",
            [
                "[acme]\ndirectory = \"https://acme.test/dir\"\n".to_string(),
                base(),
                site("customers", &["*"], &[r#"tls = { on_demand = { permission = "http://127.0.0.1:3000/allowed" } }"#, RESPOND]),
                site("b", &["a.test"], &[r#"tls = { acme = true }"#, RESPOND]),
            ]
            .concat(),
            vec![
                error("site[0].tls.acme", "it needs acme = true"),
                error("site[1].tls.acme", "needs on_demand"),
            ],
        ),
        case(
            "on_demand values out of range, all reported",
            [
                "[acme]\ndirectory = \"https://acme.test/dir\"\n".to_string(),
                base(),
                site("customers", &["*"], &[r#"tls = { acme = true, cert = "a.pem", on_demand = { permission = "https://perm.test/ok", wait = "2m", max_orders = 0, refused_ttl = "soon", colour = 1 } }"#, RESPOND]),
            ]
            .concat(),
            vec![
                error("site[0].tls", "not both"),
                error("site[0].tls.on_demand.permission", "is not an http:// URL"),
                error("site[0].tls.on_demand.wait", "at most 60s"),
                error("site[0].tls.on_demand.max_orders", "is not a count"),
                error("site[0].tls.on_demand.refused_ttl", "is not a duration"),
                error("site[0].tls.on_demand.colour", "unknown key"),
            ],
        ),
        case(
            "on_demand without a permission endpoint",
            [
                "[acme]\ndirectory = \"https://acme.test/dir\"\n".to_string(),
                base(),
                site("customers", &["*"], &[r#"tls = { acme = true, on_demand = { wait = "1s" } }"#, RESPOND]),
            ]
            .concat(),
            vec![error("site[0].tls.on_demand.permission", "permission is missing")],
        ),
        case(
            "acme site without an [acme] table",
            [base(), site("a", &["a.test"], &[r#"tls = "acme""#, RESPOND])].concat(),
            vec![error("site[0].tls", "there is no [acme] table")],
        ),
        case(
            "acme site before its first certificate: a warning, not an error",
            [
                "[acme]\ndirectory = \"https://acme.test/dir\"\n".to_string(),
                base(),
                site("a", &["a.test"], &[r#"tls = "acme""#, RESPOND]),
            ]
            .concat(),
            vec![warning("site[0].tls", "certificate is pending")],
        ),
        case(
            "acme table problems, all reported",
            [
                "[acme]\ndirectory = \"http://acme.test/dir\"\nemail = \"nobody\"\nchallenges = [\"dns-01\"]\nkey = \"x\"\n".to_string(),
                base(),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![
                error("acme.directory", "is not an https:// URL"),
                error("acme.email", "is not an email address"),
                error("acme.challenges[0]", "unknown challenge type \"dns-01\""),
                error("acme.key", "unknown key \"key\""),
            ],
        ),
        case(
            "acme External Account Binding with a kid but no key",
            [
                "[acme]\ndirectory = \"https://acme.test/dir\"\neab_kid = \"kid-1\"\n".to_string(),
                base(),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error("acme.eab_hmac_key", "eab_kid is set but eab_hmac_key is missing")],
        ),
        case(
            "acme External Account Binding with a key but no kid",
            [
                "[acme]\ndirectory = \"https://acme.test/dir\"\neab_hmac_key = \"c2VjcmV0\"\n".to_string(),
                base(),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error("acme.eab_kid", "eab_hmac_key is set but eab_kid is missing")],
        ),
        case(
            "acme External Account Binding key that is not base64url",
            [
                "[acme]\ndirectory = \"https://acme.test/dir\"\neab_kid = \"kid-1\"\neab_hmac_key = \"not/base64+\"\n".to_string(),
                base(),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![error("acme.eab_hmac_key", "is not base64url")],
        ),
        case(
            "acme External Account Binding, both set (padding allowed)",
            [
                "[acme]\ndirectory = \"https://acme.test/dir\"\neab_kid = \"kid-1\"\neab_hmac_key = \"c2VjcmV0MQ==\"\n".to_string(),
                base(),
                site("a", &["a.test"], &[RESPOND]),
            ]
            .concat(),
            vec![],
        ),
    ]
}
