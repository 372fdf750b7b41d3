//! Private keys whose parsing waits until a handshake first signs with them.
//!
//! Parsing a private key in aws-lc checks it: a scalar multiplication for an EC key, about
//! ten microseconds, and arithmetic with the private exponent and primes for an RSA key,
//! about 170 microseconds for RSA-2048 on the benchmark machine. With 100,000 certificates
//! that is one second (EC) or seventeen (RSA) of every start, for keys most of which will
//! not sign anything for a while. So when a key file carries its public key (every RSA key
//! does; PKCS#8 and SEC1 EC keys written by OpenSSL, rcgen and Python's `cryptography` do)
//! and that public key is the certificate's, loading checks only that, and the key is
//! parsed the first time a handshake needs it, once.
//!
//! This module never decides an error. Anything it does not recognise positively — another
//! key type or curve, an RSA size other than 2048, 3072 or 4096 bits or an exponent other
//! than 65537, no embedded public key, a public key other than the certificate's — makes
//! the caller parse the key at once, the usual way, which reports exactly what it always
//! did. What is deferred is only aws-lc's own consistency check of a private key whose
//! public key already matches the certificate (a corrupted scalar, exponent or prime): such
//! a key fails the handshakes that need it, with an error in the log, instead of failing
//! the start.
//!
//! Must never: panic on any input bytes, or take a lock once the key is parsed.

use std::fmt;
use std::sync::{Arc, OnceLock};

use rustls::pki_types::{alg_id, PrivateKeyDer, SubjectPublicKeyInfoDer};
use rustls::sign::{Signer, SigningKey};
use rustls::{SignatureAlgorithm, SignatureScheme};

/// What kind of key a [`LazyKey`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// P-256 or P-384, with the one scheme it signs with.
    Ecdsa(SignatureScheme),
    Rsa,
}

/// An ECDSA or RSA key known by its public key, parsed on first use.
pub struct LazyKey {
    der: PrivateKeyDer<'static>,
    kind: Kind,
    /// Where the public key lies in the key's encoding: the uncompressed point (ECDSA), or
    /// the modulus and exponent (RSA). Its SPKI is built when asked for, which is when
    /// loading checks it against the certificate: kept, it would be 90 bytes (ECDSA) to
    /// 550 (RSA-4096) per certificate for nothing.
    public_at: u32,
    public_len: u32,
    /// None when aws-lc refused the key: every handshake needing it then fails.
    parsed: OnceLock<Option<Arc<dyn SigningKey>>>,
}

impl fmt::Debug for LazyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LazyKey")
            .field("kind", &self.kind)
            .field("parsed", &self.parsed.get().map(|p| p.is_some()))
            .finish()
    }
}

impl LazyKey {
    /// A lazy key for `der` when it is a P-256 or P-384 key that names its public key, or
    /// an RSA key of a usual size; None otherwise (the caller then parses it at once).
    pub fn new(der: &PrivateKeyDer<'_>) -> Option<LazyKey> {
        let bytes = key_bytes(der)?;
        let (kind, public) = match der {
            PrivateKeyDer::Pkcs8(_) => pkcs8(bytes)?,
            PrivateKeyDer::Sec1(_) => sec1_ec(bytes, None).map(|(s, p)| (Kind::Ecdsa(s), p))?,
            _ => (Kind::Rsa, pkcs1_rsa(bytes)?),
        };
        Some(LazyKey {
            public_at: u32::try_from(public.as_ptr().addr() - bytes.as_ptr().addr()).ok()?,
            public_len: u32::try_from(public.len()).ok()?,
            der: der.clone_key(),
            kind,
            parsed: OnceLock::new(),
        })
    }

    /// The one scheme an ECDSA key signs with; None for an RSA key (several).
    pub fn scheme(&self) -> Option<SignatureScheme> {
        match self.kind {
            Kind::Ecdsa(scheme) => Some(scheme),
            Kind::Rsa => None,
        }
    }

    /// The public key's bytes, found again in the stored encoding.
    fn public(&self) -> Option<&[u8]> {
        let at = usize::try_from(self.public_at).ok()?;
        let len = usize::try_from(self.public_len).ok()?;
        key_bytes(&self.der)?.get(at..at.checked_add(len)?)
    }

    fn key(&self) -> Option<&Arc<dyn SigningKey>> {
        self.parsed
            .get_or_init(|| {
                let parsed = match self.kind {
                    Kind::Ecdsa(_) => rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(&self.der),
                    Kind::Rsa => rustls::crypto::aws_lc_rs::sign::any_supported_type(&self.der),
                };
                match parsed {
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

/// The schemes an RSA key signs with, in rustls' order of preference.
pub const RSA_SCHEMES: [SignatureScheme; 6] = [
    SignatureScheme::RSA_PSS_SHA512,
    SignatureScheme::RSA_PSS_SHA384,
    SignatureScheme::RSA_PSS_SHA256,
    SignatureScheme::RSA_PKCS1_SHA512,
    SignatureScheme::RSA_PKCS1_SHA384,
    SignatureScheme::RSA_PKCS1_SHA256,
];

impl SigningKey for LazyKey {
    fn choose_scheme(&self, offered: &[SignatureScheme]) -> Option<Box<dyn Signer>> {
        // Answered without parsing when the client cannot use this key anyway.
        let usable = match self.kind {
            Kind::Ecdsa(scheme) => offered.contains(&scheme),
            Kind::Rsa => offered.iter().any(|s| RSA_SCHEMES.contains(s)),
        };
        if !usable {
            return None;
        }
        self.key()?.choose_scheme(offered)
    }

    fn public_key(&self) -> Option<SubjectPublicKeyInfoDer<'_>> {
        let public = self.public()?;
        match self.kind {
            Kind::Ecdsa(scheme) => {
                let alg = if scheme == SignatureScheme::ECDSA_NISTP256_SHA256 {
                    alg_id::ECDSA_P256
                } else {
                    alg_id::ECDSA_P384
                };
                Some(rustls::sign::public_key_to_spki(&alg, public))
            }
            Kind::Rsa => {
                // RSAPublicKey: SEQUENCE { modulus, publicExponent }, as they lie in the key.
                let mut rsa = Vec::with_capacity(public.len() + 4);
                rsa.push(SEQUENCE);
                der_len(public.len(), &mut rsa);
                rsa.extend_from_slice(public);
                Some(rustls::sign::public_key_to_spki(
                    &alg_id::RSA_ENCRYPTION,
                    rsa,
                ))
            }
        }
    }

    fn algorithm(&self) -> SignatureAlgorithm {
        match self.kind {
            Kind::Ecdsa(_) => SignatureAlgorithm::ECDSA,
            Kind::Rsa => SignatureAlgorithm::RSA,
        }
    }
}

/// A DER length.
fn der_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|&&b| b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
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

/// The encoding of a PKCS#8, SEC1 or PKCS#1 key; None for any other kind.
fn key_bytes<'a>(der: &'a PrivateKeyDer<'_>) -> Option<&'a [u8]> {
    match der {
        PrivateKeyDer::Pkcs8(k) => Some(k.secret_pkcs8_der()),
        PrivateKeyDer::Sec1(k) => Some(k.secret_sec1_der()),
        PrivateKeyDer::Pkcs1(k) => Some(k.secret_pkcs1_der()),
        _ => None,
    }
}

/// id-ecPublicKey (1.2.840.10045.2.1), the contents of the OID.
const EC_PUBLIC_KEY: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// secp256r1 (1.2.840.10045.3.1.7) and secp384r1 (1.3.132.0.34).
const P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
/// rsaEncryption (1.2.840.113549.1.1.1).
const RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

const SEQUENCE: u8 = 0x30;
const INTEGER: u8 = 0x02;
const OCTET_STRING: u8 = 0x04;
const OID: u8 = 0x06;
const BIT_STRING: u8 = 0x03;

type Found<'a> = (SignatureScheme, &'a [u8]);

/// PKCS#8 PrivateKeyInfo: SEQUENCE { version, SEQUENCE { algorithm, parameters },
/// OCTET STRING (an ECPrivateKey or an RSAPrivateKey), ... }.
fn pkcs8(der: &[u8]) -> Option<(Kind, &[u8])> {
    let (body, _) = expect(der, SEQUENCE)?;
    let (_, rest) = expect(body, INTEGER)?;
    let (alg, rest) = expect(rest, SEQUENCE)?;
    let (oid, params) = expect(alg, OID)?;
    let (inner, _) = expect(rest, OCTET_STRING)?;
    if oid == EC_PUBLIC_KEY {
        let (curve, _) = expect(params, OID)?;
        sec1_ec(inner, Some(curve)).map(|(scheme, point)| (Kind::Ecdsa(scheme), point))
    } else if oid == RSA_ENCRYPTION {
        Some((Kind::Rsa, pkcs1_rsa(inner)?))
    } else {
        None
    }
}

/// PKCS#1 RSAPrivateKey: SEQUENCE { version 0, modulus, publicExponent, ... }. The modulus
/// and exponent, as they lie, when the modulus is 2048, 3072 or 4096 bits and the exponent
/// 65537 (what aws-lc accepts without doubt); None otherwise.
fn pkcs1_rsa(der: &[u8]) -> Option<&[u8]> {
    let (body, _) = expect(der, SEQUENCE)?;
    let (version, public) = expect(body, INTEGER)?;
    if version != [0] {
        return None;
    }
    let (modulus, rest) = expect(public, INTEGER)?;
    let (exponent, after) = expect(rest, INTEGER)?;
    // Positive and minimal: a zero byte, then a first byte with its top bit set.
    let bits = match modulus {
        [0, first, ..] if first & 0x80 != 0 => (modulus.len() - 1) * 8,
        _ => return None,
    };
    if ![2048, 3072, 4096].contains(&bits) || exponent != [0x01, 0x00, 0x01] {
        return None;
    }
    public.get(..public.len() - after.len())
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
    use rcgen::{
        KeyPair, RsaKeySize, PKCS_ECDSA_P256_SHA256, PKCS_ECDSA_P384_SHA384, PKCS_ED25519,
        PKCS_RSA_SHA256,
    };

    fn pkcs8_key(key: &KeyPair) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(key.serialize_der().into())
    }

    #[test]
    fn ec_keys_are_known_by_their_public_key() {
        for alg in [&PKCS_ECDSA_P256_SHA256, &PKCS_ECDSA_P384_SHA384] {
            let key = KeyPair::generate_for(alg).expect("key");
            let lazy = LazyKey::new(&pkcs8_key(&key)).expect("lazy");
            let eager =
                rustls::crypto::aws_lc_rs::sign::any_ecdsa_type(&pkcs8_key(&key)).expect("parsed");
            assert_eq!(lazy.public_key(), eager.public_key());
            assert!(lazy.parsed.get().is_none(), "not parsed before use");
            let Kind::Ecdsa(scheme) = lazy.kind else {
                panic!("an EC key");
            };
            let signer = lazy.choose_scheme(&[scheme]).expect("signer");
            assert!(!signer.sign(b"hello").expect("signature").is_empty());
        }
    }

    fn rsa(size: RsaKeySize) -> KeyPair {
        KeyPair::generate_rsa_for(&PKCS_RSA_SHA256, size).expect("rsa key")
    }

    /// The same RSA key as PKCS#1: the RSAPrivateKey inside the PKCS#8 OCTET STRING.
    fn pkcs1_of(pkcs8_der: &[u8]) -> PrivateKeyDer<'static> {
        let (body, _) = expect(pkcs8_der, SEQUENCE).expect("sequence");
        let (_, rest) = expect(body, INTEGER).expect("version");
        let (_, rest) = expect(rest, SEQUENCE).expect("algorithm");
        let (inner, _) = expect(rest, OCTET_STRING).expect("key");
        PrivateKeyDer::Pkcs1(inner.to_vec().into())
    }

    #[test]
    fn rsa_keys_are_known_by_their_public_key_in_pkcs8_and_pkcs1() {
        for size in [RsaKeySize::_2048, RsaKeySize::_3072] {
            let key = rsa(size);
            let der = key.serialize_der();
            for encoded in [pkcs8_key(&key), pkcs1_of(&der)] {
                let lazy = LazyKey::new(&encoded).expect("lazy");
                let eager =
                    rustls::crypto::aws_lc_rs::sign::any_supported_type(&encoded).expect("parsed");
                assert_eq!(lazy.public_key(), eager.public_key());
                assert_eq!(lazy.algorithm(), SignatureAlgorithm::RSA);
                assert!(lazy.parsed.get().is_none(), "not parsed before use");
                // A client offering only ECDSA does not make it parse the key.
                assert!(lazy
                    .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
                    .is_none());
                assert!(lazy.parsed.get().is_none());
                let signer = lazy
                    .choose_scheme(&[SignatureScheme::RSA_PSS_SHA256])
                    .expect("signer");
                assert_eq!(signer.scheme(), SignatureScheme::RSA_PSS_SHA256);
                assert!(!signer.sign(b"hello").expect("signature").is_empty());
            }
        }
    }

    #[test]
    fn a_broken_rsa_prime_fails_the_handshake_not_the_process() {
        let key = rsa(RsaKeySize::_2048);
        let mut der = key.serialize_der();
        // Past the modulus and exponents, inside the primes: the public key still matches.
        let n = der.len();
        der[n - 200..n - 150].fill(0x5a);
        let lazy = LazyKey::new(&PrivateKeyDer::Pkcs8(der.into())).expect("lazy");
        assert!(lazy
            .choose_scheme(&[SignatureScheme::RSA_PSS_SHA256])
            .is_none());
    }

    #[test]
    fn unusual_rsa_keys_are_parsed_the_usual_way() {
        let der = rsa(RsaKeySize::_2048).serialize_der();
        // The exponent 65537 made 3: aws-lc decides about such a key, not this module.
        let at = der
            .windows(5)
            .position(|w| w == [0x02, 0x03, 0x01, 0x00, 0x01])
            .expect("exponent");
        let mut odd = der.clone();
        odd[at..at + 5].copy_from_slice(&[0x02, 0x03, 0x00, 0x00, 0x03]);
        assert!(LazyKey::new(&PrivateKeyDer::Pkcs8(odd.into())).is_none());
    }

    #[test]
    fn a_client_that_cannot_use_the_key_does_not_parse_it() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let lazy = LazyKey::new(&pkcs8_key(&key)).expect("lazy");
        assert!(lazy
            .choose_scheme(&[SignatureScheme::RSA_PSS_SHA256])
            .is_none());
        assert!(lazy.parsed.get().is_none());
    }

    #[test]
    fn other_keys_are_parsed_the_usual_way() {
        let ed = KeyPair::generate_for(&PKCS_ED25519).expect("key");
        assert!(LazyKey::new(&pkcs8_key(&ed)).is_none());
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
        let lazy = LazyKey::new(&PrivateKeyDer::Pkcs8(der.into())).expect("lazy");
        assert!(lazy
            .choose_scheme(&[SignatureScheme::ECDSA_NISTP256_SHA256])
            .is_none());
    }

    #[test]
    fn truncated_and_mangled_encodings_never_panic() {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
        let der = key.serialize_der();
        let rsa = rsa(RsaKeySize::_2048).serialize_der();
        for end in 0..der.len() {
            let _ = pkcs8(&der[..end]);
            let _ = sec1_ec(&der[..end], None);
        }
        for end in 0..rsa.len() {
            let _ = pkcs8(&rsa[..end]);
            let _ = pkcs1_rsa(&rsa[..end]);
        }
        for i in 0..der.len() {
            for b in [0x00, 0x7f, 0x80, 0x84, 0xff] {
                let mut d = der.clone();
                d[i] = b;
                let _ = pkcs8(&d);
            }
        }
    }
}
