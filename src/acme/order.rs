//! One ACME account and one order: create or reuse the account, order a certificate for a
//! site's hosts, publish the challenge answers, finalize with a fresh key, and store the
//! chain and key once they load as a matching pair.

use std::path::Path;
use std::time::Duration;

use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType,
    ExternalAccountKey, Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};

use super::{challenge, store, AcmeError, Challenges};
use crate::config::{Acme, CertFiles, Challenge, Site};

/// How long one order may wait for the CA to validate and to issue.
const POLL: Duration = Duration::from_secs(120);

/// An account builder for the configured CA (with its root, when `ca` is set).
fn builder(acme: &Acme) -> Result<instant_acme::AccountBuilder, AcmeError> {
    Ok(match &acme.ca {
        Some(ca) => Account::builder_with_root(ca)?,
        None => Account::builder()?,
    })
}

/// The account whose credentials (JSON, as [`create_account`] makes them) are `json`;
/// `source` names where they were read, for the error.
pub(crate) async fn account_from(
    acme: &Acme,
    json: &[u8],
    source: &Path,
) -> Result<Account, AcmeError> {
    let credentials: AccountCredentials =
        serde_json::from_slice(json).map_err(|e| AcmeError::Account {
            path: source.to_path_buf(),
            source: e,
        })?;
    Ok(builder(acme)?.from_credentials(credentials).await?)
}

/// Creates a new account on the CA (with the External Account Binding, when one is
/// configured: it is only needed then); the account and its credentials as JSON.
pub(crate) async fn create_account(acme: &Acme) -> Result<(Account, Vec<u8>), AcmeError> {
    let contact = acme.email.as_ref().map(|e| format!("mailto:{e}"));
    let contact: Vec<&str> = contact.iter().map(String::as_str).collect();
    let eab = acme
        .eab
        .as_ref()
        .map(|e| ExternalAccountKey::new(e.kid.clone(), &e.hmac_key));
    let (account, credentials) = builder(acme)?
        .create(
            &NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            acme.directory.clone(),
            eab.as_ref(),
        )
        .await?;
    let json = serde_json::to_vec_pretty(&credentials).map_err(|source| AcmeError::Account {
        path: Path::new("the new account's credentials").to_path_buf(),
        source,
    })?;
    Ok((account, json))
}

/// The account in `home/account.json`, created on the CA first if there is none.
pub(super) async fn account(acme: &Acme, home: &Path) -> Result<Account, AcmeError> {
    let path = store::account_path(home);
    match std::fs::read(&path) {
        Ok(bytes) => account_from(acme, &bytes, &path).await,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let (account, json) = create_account(acme).await?;
            store::write_private(&path, &json)?;
            tracing::info!(account = account.id(), file = %path.display(), external_account_binding = acme.eab.is_some(), "ACME account created");
            Ok(account)
        }
        Err(source) => Err(AcmeError::Io {
            what: "cannot read",
            path,
            source,
        }),
    }
}

/// Challenge answers published for one order, withdrawn when it ends, however it ends.
struct Published<'c> {
    challenges: &'c Challenges,
    tokens: Vec<String>,
    hosts: Vec<String>,
}

impl Drop for Published<'_> {
    fn drop(&mut self) {
        for t in &self.tokens {
            self.challenges.set_http(t, None);
        }
        for h in &self.hosts {
            self.challenges.set_tls_alpn(h, None);
        }
    }
}

fn challenge_type(c: Challenge) -> ChallengeType {
    match c {
        Challenge::TlsAlpn01 => ChallengeType::TlsAlpn01,
        Challenge::Http01 => ChallengeType::Http01,
    }
}

/// Orders a certificate for `site` and stores it in `files`. `replaces` names the
/// certificate being renewed, for a CA that offers ARI (RFC 9773 section 5).
pub(super) async fn issue(
    account: &Account,
    site: &Site,
    allowed: &[Challenge],
    challenges: &Challenges,
    files: &CertFiles,
    replaces: Option<CertificateIdentifier<'static>>,
    fleet: Option<&crate::cluster::acme::OrderLock>,
) -> Result<(), AcmeError> {
    let ids: Vec<Identifier> = site
        .hosts
        .iter()
        .map(|h| Identifier::Dns(h.to_string()))
        .collect();
    let mut new_order = NewOrder::new(&ids);
    if let Some(r) = replaces {
        new_order = new_order.replaces(r);
    }
    let mut order = account.new_order(&new_order).await?;
    let mut published = Published {
        challenges,
        tokens: Vec::new(),
        hosts: Vec::new(),
    };
    let mut authorizations = order.authorizations();
    while let Some(authz) = authorizations.next().await {
        let mut authz = authz?;
        match authz.status {
            AuthorizationStatus::Valid => continue,
            AuthorizationStatus::Pending => {}
            _ => {
                return Err(AcmeError::Authorization(
                    authz.identifier().to_string(),
                    format!("{:?}", authz.status),
                ))
            }
        }
        let host = authz.identifier().to_string();
        let ty = allowed
            .iter()
            .map(|&c| challenge_type(c))
            .find(|t| authz.challenges.iter().any(|c| &c.r#type == t))
            .ok_or_else(|| AcmeError::NoChallenge(host.clone()))?;
        let mut ch = authz
            .challenge(ty.clone())
            .ok_or_else(|| AcmeError::NoChallenge(host.clone()))?;
        let key_authorization = ch.key_authorization();
        // In a fleet the CA may connect to any node: the answer goes to etcd too, where
        // every node's watch picks it up.
        if ty == ChallengeType::Http01 {
            challenges.set_http(&ch.token, Some(key_authorization.as_str().to_string()));
            published.tokens.push(ch.token.clone());
            if let Some(fleet) = fleet {
                fleet
                    .publish_http(&ch.token, key_authorization.as_str())
                    .await?;
            }
        } else {
            let digest = key_authorization.digest();
            let cert = challenge::certificate(&host, digest.as_ref())?;
            challenges.set_tls_alpn(&host, Some(cert));
            published.hosts.push(host.clone());
            if let Some(fleet) = fleet {
                fleet.publish_tls_alpn(&host, digest.as_ref()).await?;
            }
        }
        tracing::info!(site = %site.name, %host, challenge = ?ty, "ACME challenge ready");
        ch.set_ready().await?;
    }
    let retries = RetryPolicy::new().timeout(POLL);
    let status = order.poll_ready(&retries).await?;
    if status != OrderStatus::Ready {
        // The order's own error is often empty; the challenges say what failed.
        let mut authorizations = order.authorizations();
        while let Some(authz) = authorizations.next().await {
            let mut authz = authz?;
            let state = authz.refresh().await?;
            let host = state.identifier().to_string();
            if let Some(problem) = state.challenges.iter().find_map(|c| c.error.clone()) {
                return Err(AcmeError::Challenge(host, problem));
            }
        }
        return Err(AcmeError::OrderStatus(status));
    }
    drop(published);

    let names: Vec<String> = site.hosts.iter().map(|h| h.to_string()).collect();
    let rcgen = |what| move |source| AcmeError::Rcgen { what, source };
    let key = rcgen::KeyPair::generate().map_err(rcgen("certificate key"))?;
    let csr = rcgen::CertificateParams::new(names)
        .and_then(|p| p.serialize_request(&key))
        .map_err(rcgen("certificate signing request"))?;
    order.finalize_csr(csr.der()).await?;
    let chain = order.poll_certificate(&retries).await?;

    // Stored only as a pair that loads: written aside, loaded, then renamed into place.
    let new_cert = files.cert.with_extension("pem.new");
    let new_key = files.key.with_extension("key.new");
    store::write_private(&new_key, key.serialize_pem().as_bytes())?;
    store::write_private(&new_cert, chain.as_bytes())?;
    crate::tls::load::load(&new_cert, &new_key)?;
    for (from, to) in [(&new_key, &files.key), (&new_cert, &files.cert)] {
        std::fs::rename(from, to).map_err(|source| AcmeError::Io {
            what: "cannot rename into",
            path: to.to_path_buf(),
            source,
        })?;
    }
    Ok(())
}
