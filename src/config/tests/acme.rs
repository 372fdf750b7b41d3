//! Rows of the diagnostics table: the [acme] table.

use super::*;

pub(super) fn cases() -> Vec<Case> {
    vec![
        // ---- ACME ------------------------------------------------------------------------------
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
