//! ECDSA private keys whose parsing waits until a handshake first signs with them.
//!
//! Parsing an EC private key in aws-lc checks it with a scalar multiplication, about ten
//! microseconds; with 100,000 certificates that is a second of every start, for keys most
//! of which will not sign anything for a while. So when a key file carries its public key
//! (as PKCS#8 and SEC1 files written by OpenSSL, rcgen and Python's `cryptography` do) and
//! that public key is the certificate's, loading checks only that, and the key is parsed
//! the first time a handshake needs it, once.
//!
//! This module never decides an error. Anything it does not recognise positively — another
//! key type or curve, no embedded public key, a public key other than the certificate's —
//! makes the caller parse the key at once, the usual way, which reports exactly what it
//! always did. What is deferred is only aws-lc's own consistency check of a private key
//! whose public key already matches the certificate (a corrupted scalar): such a key fails
//! the handshakes that need it, with an error in the log, instead of failing the start.
//!
//! Must never: panic on any input bytes, or take a lock once the key is parsed.

use std::fmt;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::{alg_id, AlgorithmIdentifier, PrivateKeyDer, SubjectPublicKeyInfoDer};
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

/// An ECDSA key known by its public key, parsed on first use.
pub struct LazyEcdsaKey {
    der: PrivateKeyDer<'static>,
    scheme: SignatureScheme,
    /// Where the public key (the uncompressed point) starts in `der`. Its SPKI is built
    /// when asked for, which is when loading checks it against the certificate: kept, it
    /// would be about 90 bytes per certificate for nothing.
    point_at: usize,
    /// None when aws-lc refused the key: every handshake needing it then fails.
    parsed: OnceLock<Option<Arc<dyn SigningKey>>>,
}

impl fmt::Debug for LazyEcdsaKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyEcdsaKey")
            .field("scheme", &self.scheme)
            .field("parsed", &self.parsed.get().map(|p| p.is_some()))
            .finish()
    }
}

impl LazyEcdsaKey {
    /// A lazy key for `der` when it is a P-256 or P-384 key that names its public key;
    /// None otherwise (the caller then parses it at once).
    pub fn new(der: &PrivateKeyDer<'_>) -> Option<LazyEcdsaKey> {
        let bytes = key_bytes(der)?;
        let (scheme, point) = match der {
            PrivateKeyDer::Pkcs8(_) => pkcs8_ec(bytes)?,
            _ => sec1_ec(bytes, None)?,
        };
        Some(LazyEcdsaKey {
            point_at: point.as_ptr().addr() - bytes.as_ptr().addr(),
            der: der.clone_key(),
            scheme,
            parsed: OnceLock::new(),
        })
    }

    /// The uncompressed point and its algorithm, found again in the stored encoding.
    fn point(&self) -> Option<(AlgorithmIdentifier, &[u8])> {
        let alg = match self.scheme {
            SignatureScheme::ECDSA_NISTP256_SHA256 => alg_id::ECDSA_P256,
            _ => alg_id::ECDSA_P384,
        };
        let len = point_len(self.scheme);
        let point = key_bytes(&self.der)?.get(self.point_at..self.point_at + len)?;
        Some((alg, point))
    }

    fn key(&self) -> Option<&Arc<dyn SigningKey>> {
        self.parsed
            .get_or_init(|| {
                match rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(&self.der) {
                    Ok(key) => Some(key),
                    Err(e) => {
                        tracing::error!(error = %e, "a private key whose public key matches its certificate cannot be used; handshakes needing it fail");
                        None
                    }
                }
            })
            .as_ref()
    }
}

impl SigningKey for LazyEcdsaKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        // Answered without parsing when the client cannot use this key anyway.
        if !offered.contains(&self.scheme) {
            return None;
        }
        self.key()?.choose_scheme(offered)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        let (alg, point) = self.point()?;
        Some(rustls::sign::public_key_to_spki(&alg, point))
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        SignatureAlgorithm::ECDSA
    }
}

/// The length of an uncompressed point: P-256 or P-384, the only curves made lazy.
fn point_len(scheme: SignatureScheme) -> usize {
    if scheme == SignatureScheme::ECDSA_NISTP256_SHA256 {
        65
    } else {
        97
    }
}

/// The encoding of a PKCS#8 or SEC1 key; None for any other kind.
fn key_bytes<'a>(der: &'a PrivateKeyDer<'_>) -> Option<&'a [u8]> {
    match der {
        PrivateKeyDer::Pkcs8(k) => Some(k.secret_pkcs8_der()),
        PrivateKeyDer::Sec1(k) => Some(k.secret_sec1_der()),
        _ => None,
    }
}

/// id-ecPublicKey (1.2.840.10045.2.1), the contents of the OID.
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// secp256r1 (1.2.840.10045.3.1.7) and secp384r1 (1.3.132.0.34).
const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const BIT_STRING: u8 = 0x03;

type Found<'a> = (SignatureScheme, &'a [u8]);

/// PKCS#8 PrivateKeyInfo: SEQUENCE { version, SEQUENCE { id-ecPublicKey, curve },
/// OCTET STRING (an ECPrivateKey), ... }.
fn pkcs8_ec(der: &[u8]) -> Option<Found<'_>> {
    let (body, _) = expect(der, SEQUENCE)?;
    let (_, rest) = expect(body, INTEGER)?;
    let (alg, rest) = expect(rest, SEQUENCE)?;
    let (oid, params) = expect(alg, OID)?;
    if oid != EC_PUBLIC_KEY {
        return None;
    }
    let (curve, _) = expect(params, OID)?;
    let (inner, _) = expect(rest, OCTET_STRING)?;
    sec1_ec(inner, Some(curve))
}

/// SEC1 ECPrivateKey: SEQUENCE { version, OCTET STRING, [0] curve OPTIONAL,
/// [1] BIT STRING public key OPTIONAL }. The curve comes from PKCS#8 or from [0].
fn sec1_ec<'a>(der: &'a [u8], curve: Option<&'a [u8]>) -> Option<Found<'a>> {
    let (body, _) = expect(der, SEQUENCE)?;
    let (_, rest) = expect(body, INTEGER)?;
    let (_, mut rest) = expect(rest, OCTET_STRING)?;
    let mut curve = curve;
    let mut point = None;
    while !rest.is_empty() {
        let (tag, content, next) = tlv(rest)?;
        match tag {
            0xa0 => {
                let (named, _) = expect(content, OID)?;
                if curve.is_some_and(|c| c != named) {
                    return None;
                }
                curve = Some(named);
            }
            0xa1 => {
                let (bits, _) = expect(content, BIT_STRING)?;
                // No unused bits, then the uncompressed point.
                match bits.split_first() {
                    Some((0, p)) if p.first() == Some(&0x04) => point = Some(p),
                    _ => return None,
                }
            }
            _ => return None,
        }
        rest = next;
    }
    let scheme = match curve? {
        c if c == P256 => SignatureScheme::ECDSA_NISTP256_SHA256,
        c if c == P384 => SignatureScheme::ECDSA_NISTP384_SHA384,
        _ => return None,
    };
    let point = point?;
    (point.len() == point_len(scheme)).then_some((scheme, point))
}

/// The contents of the DER element at the start of `input` if its tag is `tag`, and what
/// follows it.
fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (t, content, rest) = tlv(input)?;
    (t == tag).then_some((content, rest))
}

/// One DER element: (tag, contents, rest). Single-byte tags and definite lengths of up to
/// four bytes, which is all a key file holds; anything else is None.
fn tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    let (content, rest) = rest.split_at(len);
    Some((tag, content, rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519};

    fn pkcs8(key: &KeyPair) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(key.serialize_der().into())
    }

    #[test]
    fn ec_keys_are_known_by_their_public_key() {
        for alg in [&PKCS_ECDSA_P256_SHA256, &PKCS_ECDSA_P384_SHA384] {
            let key = KeyPair::generate_for(alg).expect("key");
            let lazy = LazyEcdsaKey::new(&pkcs8(&key)).expect("lazy");
            let eager =
                rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(&pkcs8(&key)).expect("parsed");
            assert_eq!(lazy.public_key(), eager.public_key());
            assert!(lazy.parsed.get().is_none(), "not parsed before use");
            let signer = lazy.choose_scheme(&[lazy.scheme]).expect("signer");
            assert!(!signer.sign(b"hello").expect("signature").is_empty());
        }
    }

    #[test]
    fn a_client_that_cannot_use_the_key_does_not_parse_it() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let lazy = LazyEcdsaKey::new(&pkcs8(&key)).expect("lazy");
        assert!(lazy
            .choose_scheme(&[SignatureScheme::RSA_PSS_SHA256])
            .is_none());
        assert!(lazy.parsed.get().is_none());
    }

    #[test]
    fn other_keys_are_parsed_the_usual_way() {
        let ed = KeyPair::generate_for(&PKCS_ED25519).expect("key");
        assert!(LazyEcdsaKey::new(&pkcs8(&ed)).is_none());
    }

    #[test]
    fn a_broken_scalar_fails_the_handshake_not_the_process() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let mut der = key.serialize_der();
        // The private scalar of rcgen's P-256 PKCS#8 follows `04 20` inside the key.
        let at = der
            .windows(2)
            .position(|w| w == [0x04, 0x20])
            .expect("scalar")
            + 2;
        der[at..at + 32].fill(0xff);
        let lazy = LazyEcdsaKey::new(&PrivateKeyDer::Pkcs8(der.into())).expect("lazy");
        assert!(lazy
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
            .is_none());
    }

    #[test]
    fn truncated_and_mangled_encodings_never_panic() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let der = key.serialize_der();
        for end in 0..der.len() {
            let _ = pkcs8_ec(&der[..end]);
            let _ = sec1_ec(&der[..end], None);
        }
        for i in 0..der.len() {
            for b in [0x00, 0x7f, 0x80, 0x84, 0xff] {
                let mut d = der.clone();
                d[i] = b;
                let _ = pkcs8_ec(&d);
            }
        }
    }
}
