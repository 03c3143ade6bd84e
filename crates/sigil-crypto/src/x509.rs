//! The trust domain's X.509 authority and X509-SVIDs (SPIFFE X509-SVID specification): a CA
//! certificate whose URI SAN is the trust domain's ID, and leaf SVIDs with exactly one
//! `spiffe://` URI SAN, `CA:false`, `digitalSignature` key usage, TLS client and server EKUs and a
//! short lifetime. Keys are ECDSA P-256 (aws-lc-rs through rcgen).

use rcgen::{
    BasicConstraints, CertificateParams, CertificateSigningRequestParams, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, CertificateSigningRequestDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

use crate::CryptoError;

/// An X.509 certificate authority for one trust domain.
pub struct X509Authority {
    /// The CA's name, key identifier and key, parsed once (not per SVID).
    issuer: Issuer<'static, KeyPair>,
    cert_der: Vec<u8>,
    /// The CA certificate's notAfter (Unix seconds): no SVID it signs outlives it.
    not_after: i64,
}

impl std::fmt::Debug for X509Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("X509Authority")
            .field("cert_der_len", &self.cert_der.len())
            .finish_non_exhaustive()
    }
}

/// What a leaf SVID names and how long it lives.
#[derive(Debug, Clone)]
pub struct SvidRequest<'a> {
    pub spiffe_id: &'a str,
    pub dns_names: &'a [String],
    pub not_before: i64,
    pub not_after: i64,
}

fn at(unix: i64) -> Result<time::OffsetDateTime, CryptoError> {
    time::OffsetDateTime::from_unix_timestamp(unix).map_err(|_| CryptoError::Encoding("time out of range"))
}

fn serial() -> Result<SerialNumber, CryptoError> {
    // 16 random bytes, high bit cleared so the DER INTEGER stays positive (RFC 5280 §4.1.2.2).
    let mut bytes = crate::random_bytes::<16>()?;
    if let Some(first) = bytes.first_mut() {
        *first &= 0x7f;
    }
    Ok(SerialNumber::from_slice(&bytes))
}

fn uri(s: &str) -> Result<SanType, CryptoError> {
    Ok(SanType::URI(
        s.try_into().map_err(|_| CryptoError::Encoding("URI SAN"))?,
    ))
}

fn cert_error(_: rcgen::Error) -> CryptoError {
    CryptoError::Sign
}

impl X509Authority {
    /// A self-signed root for `trust_domain_id` (`spiffe://<td>`), valid in `[not_before, not_after]`.
    pub fn generate_root(trust_domain_id: &str, not_before: i64, not_after: i64) -> Result<Self, CryptoError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert_error)?;
        let params = ca_params(trust_domain_id, not_before, not_after, BasicConstraints::Unconstrained)?;
        let cert = params.self_signed(&key).map_err(cert_error)?;
        Self::assemble(key, cert.der().to_vec())
    }

    /// An intermediate CA for `trust_domain_id` signed by `upstream` (an operator's CA): it signs
    /// SVIDs and no further CAs (path length 0); relying parties trust the upstream root.
    pub fn generate_intermediate(
        trust_domain_id: &str,
        upstream: &X509Authority,
        not_before: i64,
        not_after: i64,
    ) -> Result<Self, CryptoError> {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert_error)?;
        let mut params = ca_params(trust_domain_id, not_before, not_after, BasicConstraints::Constrained(0))?;
        params.use_authority_key_identifier_extension = true;
        let cert = params.signed_by(&key, &upstream.issuer).map_err(cert_error)?;
        Self::assemble(key, cert.der().to_vec())
    }

    fn assemble(key: KeyPair, cert_der: Vec<u8>) -> Result<Self, CryptoError> {
        let not_after = cert_not_after(&cert_der)?;
        let issuer = Issuer::from_ca_cert_der(&CertificateDer::from(cert_der.as_slice()), key)
            .map_err(|_| CryptoError::KeyFormat("not a CA certificate"))?;
        Ok(Self {
            issuer,
            cert_der,
            not_after,
        })
    }

    /// An authority restored from its PKCS#8 key and certificate.
    pub fn from_parts(key_pkcs8: &[u8], cert_der: &[u8]) -> Result<Self, CryptoError> {
        let der = PrivatePkcs8KeyDer::from(key_pkcs8.to_vec());
        let key = KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|_| CryptoError::KeyFormat("CA key is not a P-256 PKCS#8 key"))?;
        Self::assemble(key, cert_der.to_vec())
    }

    /// The private key, PKCS#8 DER, for sealing at rest.
    pub fn key_pkcs8(&self) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(self.issuer.key().serialize_der())
    }

    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// Signs an X509-SVID for the public key of a PKCS#10 request. Only the key is taken from
    /// the request (whose signature must verify): names, lifetime and extensions are the
    /// server's, from the registration entry.
    pub fn sign_csr(&self, csr_der: &[u8], req: &SvidRequest<'_>) -> Result<Vec<u8>, CryptoError> {
        check_csr_key(csr_der)?;
        let csr = CertificateSigningRequestParams::from_der(&CertificateSigningRequestDer::from(csr_der))
            .map_err(|_| CryptoError::KeyFormat("not a valid CSR of a supported key type"))?;
        self.sign_leaf(&csr.public_key, req)
    }

    /// Signs an X509-SVID for a key pair the caller generated (PKCS#8 P-256), returning the
    /// certificate.
    pub fn sign_for_key(&self, key_pkcs8: &[u8], req: &SvidRequest<'_>) -> Result<Vec<u8>, CryptoError> {
        let der = PrivatePkcs8KeyDer::from(key_pkcs8.to_vec());
        let key = KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|_| CryptoError::KeyFormat("not a P-256 PKCS#8 key"))?;
        self.sign_leaf(&key, req)
    }

    fn sign_leaf(&self, public_key: &impl rcgen::PublicKeyData, req: &SvidRequest<'_>) -> Result<Vec<u8>, CryptoError> {
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "SPIFFE");
        params.distinguished_name = dn;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let mut sans = vec![uri(req.spiffe_id)?];
        for d in req.dns_names {
            sans.push(SanType::DnsName(
                d.as_str().try_into().map_err(|_| CryptoError::Encoding("DNS SAN"))?,
            ));
        }
        params.subject_alt_names = sans;
        params.not_before = at(req.not_before)?;
        // A leaf that outlived its CA would not verify for the rest of its life (and agents
        // renew at half of it).
        params.not_after = at(req.not_after.min(self.not_after))?;
        params.serial_number = Some(serial()?);
        params.use_authority_key_identifier_extension = true;
        Ok(params
            .signed_by(public_key, &self.issuer)
            .map_err(cert_error)?
            .der()
            .to_vec())
    }
}

/// The parameters of a trust domain CA certificate: named after the trust domain, whose ID is
/// its URI SAN, allowed to sign certificates and CRLs.
fn ca_params(
    trust_domain_id: &str,
    not_before: i64,
    not_after: i64,
    constraints: BasicConstraints,
) -> Result<CertificateParams, CryptoError> {
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "Sigil");
    dn.push(DnType::CommonName, format!("Sigil CA {trust_domain_id}"));
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(constraints);
    // X509-SVID Appendix A: digitalSignature is for leaves only.
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params.subject_alt_names = vec![uri(trust_domain_id)?];
    params.not_before = at(not_before)?;
    params.not_after = at(not_after)?;
    params.serial_number = Some(serial()?);
    Ok(params)
}

/// A certificate's notAfter, Unix seconds.
fn cert_not_after(cert_der: &[u8]) -> Result<i64, CryptoError> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der)
        .map_err(|_| CryptoError::KeyFormat("not a certificate"))?;
    Ok(cert.validity().not_after.timestamp())
}

/// The key a CSR asks to certify must be one an SVID may carry, and well formed: rcgen takes the
/// key type from the CSR's signature algorithm, so a P-384 key under `ecdsa-with-SHA256` would
/// otherwise be certified as a P-256 key it is not.
fn check_csr_key(csr_der: &[u8]) -> Result<(), CryptoError> {
    use x509_parser::prelude::FromDer;
    const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
    const P256: &str = "1.2.840.10045.3.1.7";
    const RSA: &str = "1.2.840.113549.1.1.1";
    const ED25519: &str = "1.3.101.112";
    const ECDSA_SHA256: &str = "1.2.840.10045.4.3.2";
    let (_, csr) = x509_parser::certification_request::X509CertificationRequest::from_der(csr_der)
        .map_err(|_| CryptoError::KeyFormat("not a valid CSR"))?;
    let spki = &csr.certification_request_info.subject_pki;
    let key = spki.subject_public_key.data.as_ref();
    let curve = spki
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string());
    let ok = match spki.algorithm.algorithm.to_id_string().as_str() {
        EC_PUBLIC_KEY => {
            curve.as_deref() == Some(P256)
                && key.len() == 65
                && key.first() == Some(&4)
                && csr.signature_algorithm.algorithm.to_id_string() == ECDSA_SHA256
        }
        RSA | ED25519 => true,
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(CryptoError::KeyFormat(
            "the CSR's key is not a P-256, RSA or Ed25519 key",
        ))
    }
}

/// The public key of a P-256 certificate as a JWK (`kty` `EC`, `crv` `P-256`, `x`, `y`), for
/// the SPIFFE bundle.
pub fn ec_jwk_of_cert(cert_der: &[u8]) -> Result<serde_json::Value, CryptoError> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der)
        .map_err(|_| CryptoError::KeyFormat("not a certificate"))?;
    let point = cert.public_key().subject_public_key.data.as_ref();
    // An uncompressed P-256 point: 0x04 || x (32 bytes) || y (32 bytes).
    match (point.first(), point.get(1..33), point.get(33..65)) {
        (Some(4), Some(x), Some(y)) if point.len() == 65 => Ok(serde_json::json!({
            "kty": "EC",
            "crv": "P-256",
            "x": crate::b64url(x),
            "y": crate::b64url(y),
        })),
        _ => Err(CryptoError::KeyFormat("not a P-256 key")),
    }
}

/// A fresh P-256 key pair for a workload, PKCS#8 DER (what the Workload API hands out).
pub fn generate_svid_key() -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(cert_error)?;
    Ok(Zeroizing::new(key.serialize_der()))
}

/// A PKCS#10 request for a P-256 PKCS#8 key (what a node agent sends for a workload's SVID; the
/// server takes only the key from it).
pub fn make_csr(key_pkcs8: &[u8]) -> Result<Vec<u8>, CryptoError> {
    let der = PrivatePkcs8KeyDer::from(key_pkcs8.to_vec());
    let key = KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|_| CryptoError::KeyFormat("not a P-256 PKCS#8 key"))?;
    let csr = CertificateParams::default()
        .serialize_request(&key)
        .map_err(cert_error)?;
    Ok(csr.der().to_vec())
}

/// A certificate's URI subject alternative names.
pub fn uri_sans(cert_der: &[u8]) -> Result<Vec<String>, CryptoError> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der)
        .map_err(|_| CryptoError::KeyFormat("not a certificate"))?;
    let mut out = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext.parsed_extension() {
            for name in &san.general_names {
                if let GeneralName::URI(u) = name {
                    out.push((*u).to_owned());
                }
            }
        }
    }
    Ok(out)
}

/// A certificate's validity window (unix seconds).
pub fn validity(cert_der: &[u8]) -> Result<(i64, i64), CryptoError> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der)
        .map_err(|_| CryptoError::KeyFormat("not a certificate"))?;
    let v = cert.validity();
    Ok((v.not_before.timestamp(), v.not_after.timestamp()))
}

/// A certificate's serial number, lowercase hex without separators (the INTEGER's content
/// octets). Only the DER in front of the serial is walked, not the whole certificate: this runs
/// for every SVID the server signs.
pub fn serial_hex(cert_der: &[u8]) -> Result<String, CryptoError> {
    const NOT_A_CERT: CryptoError = CryptoError::KeyFormat("not a certificate");
    let (certificate, _) = der_element(cert_der, 0x30).ok_or(NOT_A_CERT)?;
    let (mut tbs, _) = der_element(certificate, 0x30).ok_or(NOT_A_CERT)?;
    // `version [0] EXPLICIT` is present in every v3 certificate.
    if let Some((_, rest)) = der_element(tbs, 0xa0) {
        tbs = rest;
    }
    let (serial, _) = der_element(tbs, 0x02).ok_or(NOT_A_CERT)?;
    if serial.is_empty() {
        return Err(NOT_A_CERT);
    }
    Ok(crate::hex(serial))
}

/// Splits one DER element with tag `tag` off the front of `der`: (its content, what follows).
fn der_element(der: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = der.split_first()?;
    if first != tag {
        return None;
    }
    let (&len0, rest) = rest.split_first()?;
    let (len, rest) = if len0 < 0x80 {
        (usize::from(len0), rest)
    } else {
        let n = usize::from(len0 & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        (bytes.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b)), rest)
    };
    if rest.len() < len {
        return None;
    }
    Some(rest.split_at(len))
}

/// PEM armour for a DER certificate (for `openssl` and files).
pub fn cert_pem(der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(std::str::from_utf8(chunk).unwrap_or_default());
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;

    #[test]
    fn svids_chain_to_the_root_and_carry_one_spiffe_uri() {
        let ca = X509Authority::generate_root("spiffe://example.org", NOW - 60, NOW + 86_400).unwrap();
        let key = generate_svid_key().unwrap();
        let req = SvidRequest {
            spiffe_id: "spiffe://example.org/ns/prod/sa/billing",
            dns_names: &[],
            not_before: NOW - 10,
            not_after: NOW + 3600,
        };
        let leaf = ca.sign_for_key(&key, &req).unwrap();
        let restored = X509Authority::from_parts(&ca.key_pkcs8(), ca.cert_der()).unwrap();
        let again = restored.sign_for_key(&key, &req).unwrap();
        assert_ne!(leaf, again, "fresh serial numbers");
        let text = String::from_utf8_lossy(&leaf);
        assert!(text.contains("spiffe://example.org/ns/prod/sa/billing"));
    }

    #[test]
    fn serial_hex_reads_the_serial_x509_parser_sees() {
        use x509_parser::prelude::FromDer;
        let ca = X509Authority::generate_root("spiffe://example.org", NOW - 10, NOW + 3600).unwrap();
        let key = generate_svid_key().unwrap();
        let req = SvidRequest {
            spiffe_id: "spiffe://example.org/a",
            dns_names: &[],
            not_before: NOW - 10,
            not_after: NOW + 3600,
        };
        for _ in 0..50 {
            let leaf = ca.sign_for_key(&key, &req).unwrap();
            let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(&leaf).unwrap();
            assert_eq!(
                serial_hex(&leaf).unwrap(),
                parsed.raw_serial_as_string().replace(':', "")
            );
        }
        assert_eq!(serial_hex(ca.cert_der()).unwrap().len() % 2, 0);
        assert!(serial_hex(b"garbage").is_err());
        assert!(serial_hex(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(serial_hex(&[]).is_err());
    }

    #[test]
    fn garbage_csrs_are_refused() {
        let ca = X509Authority::generate_root("spiffe://example.org", NOW - 60, NOW + 86_400).unwrap();
        let req = SvidRequest {
            spiffe_id: "spiffe://example.org/a",
            dns_names: &[],
            not_before: NOW,
            not_after: NOW + 60,
        };
        assert!(ca.sign_csr(b"not a csr", &req).is_err());
        let key = generate_svid_key().unwrap();
        assert!(ca.sign_csr(&make_csr(&key).unwrap(), &req).is_ok());
        // A P-384 key is no SVID key here (it would be certified under the wrong curve).
        let p384 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let csr = CertificateParams::default().serialize_request(&p384).unwrap();
        assert!(ca.sign_csr(csr.der(), &req).is_err());
    }

    /// No leaf outlives the CA that signed it, and only leaves may sign data (X509-SVID §4.3).
    #[test]
    fn leaves_end_with_their_ca_and_cas_only_sign_certificates() {
        use x509_parser::prelude::FromDer;
        let ca = X509Authority::generate_root("spiffe://example.org", NOW - 60, NOW + 600).unwrap();
        let req = SvidRequest {
            spiffe_id: "spiffe://example.org/a",
            dns_names: &[],
            not_before: NOW,
            not_after: NOW + 7 * 86_400,
        };
        let leaf = ca.sign_for_key(&generate_svid_key().unwrap(), &req).unwrap();
        assert_eq!(cert_not_after(&leaf).unwrap(), NOW + 600);
        let (_, parsed) = x509_parser::certificate::X509Certificate::from_der(ca.cert_der()).unwrap();
        let usage = parsed.key_usage().unwrap().unwrap().value;
        assert!(usage.key_cert_sign() && usage.crl_sign() && !usage.digital_signature());
    }
}
