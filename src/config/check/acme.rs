//! The `[acme]` table: directory, contact, challenges, External Account Binding.

use super::*;

impl Checker<'_> {
    /// The `[acme]` table; None (with errors reported) when it cannot be used.
    pub(super) fn acme(&mut self, raw: raw::RawAcme) -> Option<Acme> {
        unknown_keys(
            self.report,
            "acme",
            &raw.unknown,
            &[
                "directory",
                "email",
                "ca",
                "challenges",
                "eab_kid",
                "eab_hmac_key",
            ],
        );
        let eab = self.eab(raw.eab_kid, raw.eab_hmac_key);
        let directory = match raw.directory {
            Some(d) if d.starts_with("https://") => Some(d),
            Some(d) => {
                self.report.error(
                    "acme.directory",
                    format!("{d:?} is not an https:// URL"),
                    Some("give the CA's ACME v2 directory URL, such as \"https://acme-v02.api.letsencrypt.org/directory\"".to_string()),
                );
                None
            }
            None => {
                self.report.error(
                    "acme.directory",
                    "directory is missing",
                    Some("give the CA's ACME v2 directory URL, such as \"https://acme-v02.api.letsencrypt.org/directory\"".to_string()),
                );
                None
            }
        };
        if let Some(email) = &raw.email {
            if !email.contains('@') || email.contains(char::is_whitespace) {
                self.report.error(
                    "acme.email",
                    format!("{email:?} is not an email address"),
                    Some(
                        "write an address such as \"ops@example.com\", or remove email".to_string(),
                    ),
                );
            }
        }
        let mut challenges = Vec::new();
        match raw.challenges {
            None => challenges = vec![Challenge::TlsAlpn01, Challenge::Http01],
            Some(list) => {
                for (i, c) in list.iter().enumerate() {
                    let c = match c.as_str() {
                        "tls-alpn-01" => Challenge::TlsAlpn01,
                        "http-01" => Challenge::Http01,
                        other => {
                            self.report.error(
                                format!("acme.challenges[{i}]"),
                                format!("unknown challenge type {other:?}"),
                                Some("use \"tls-alpn-01\" and/or \"http-01\"".to_string()),
                            );
                            continue;
                        }
                    };
                    if !challenges.contains(&c) {
                        challenges.push(c);
                    }
                }
                if list.is_empty() {
                    self.report.error(
                        "acme.challenges",
                        "no challenge type is allowed",
                        Some("list at least one of \"tls-alpn-01\", \"http-01\", or remove challenges".to_string()),
                    );
                }
            }
        }
        Some(Acme {
            directory: directory?,
            email: raw.email,
            ca: raw.ca.map(|c| self.path(&c)),
            challenges,
            eab: eab?,
        })
    }

    /// `eab_kid` and `eab_hmac_key`: both or neither; the key is base64url (padding
    /// optional, as CAs hand it out either way). `Some(None)` is "no binding";
    /// None means an error was reported.
    pub(super) fn eab(&mut self, kid: Option<String>, key: Option<String>) -> Option<Option<Eab>> {
        use base64::Engine as _;
        let fix =
            "give both eab_kid and eab_hmac_key, as the CA's account page shows them, or neither";
        match (kid, key) {
            (None, None) => Some(None),
            (Some(_), None) => {
                self.report.error(
                    "acme.eab_hmac_key",
                    "eab_kid is set but eab_hmac_key is missing: External Account Binding needs both",
                    Some(fix.to_string()),
                );
                None
            }
            (None, Some(_)) => {
                self.report.error(
                    "acme.eab_kid",
                    "eab_hmac_key is set but eab_kid is missing: External Account Binding needs both",
                    Some(fix.to_string()),
                );
                None
            }
            (Some(kid), Some(key)) => {
                let mut ok = true;
                if kid.trim().is_empty() {
                    self.report
                        .error("acme.eab_kid", "eab_kid is empty", Some(fix.to_string()));
                    ok = false;
                }
                let decoded = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(key.trim().trim_end_matches('='));
                let hmac_key = match decoded {
                    Ok(k) if !k.is_empty() => Some(k),
                    Ok(_) => {
                        self.report.error(
                            "acme.eab_hmac_key",
                            "eab_hmac_key is empty",
                            Some(fix.to_string()),
                        );
                        None
                    }
                    Err(e) => {
                        self.report.error(
                            "acme.eab_hmac_key",
                            format!("eab_hmac_key is not base64url: {e}"),
                            Some("copy the HMAC key exactly as the CA shows it (base64url: letters, digits, '-' and '_')".to_string()),
                        );
                        None
                    }
                };
                match (ok, hmac_key) {
                    (true, Some(hmac_key)) => Some(Some(Eab { kid, hmac_key })),
                    _ => None,
                }
            }
        }
    }
}
