//! SCRAM's `tls-server-end-point` channel binding (RFC 5929 §4.1): the hash of the server's
//! certificate, with the hash of the certificate's own signature algorithm (SHA-256 for MD5
//! and SHA-1). PostgreSQL computes the same and refuses a mismatch.

use sha2::{Digest, Sha256, Sha384, Sha512};

/// The hash to bind to, or `None` when the signature algorithm names no hash this knows
/// (Ed25519, RSA-PSS): such a login uses SCRAM without channel binding, as libpq does.
pub fn end_point_hash(cert_der: &[u8]) -> Option<Vec<u8>> {
    let oid = signature_algorithm(cert_der)?;
    Some(match hash_of(oid)? {
        Hash::Sha256 => Sha256::digest(cert_der).to_vec(),
        Hash::Sha384 => Sha384::digest(cert_der).to_vec(),
        Hash::Sha512 => Sha512::digest(cert_der).to_vec(),
    })
}

enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

/// Signature algorithm OIDs (DER content bytes) and the hash each implies.
fn hash_of(oid: &[u8]) -> Option<Hash> {
    const RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04];
    if let Some(rest) = oid.strip_prefix(RSA) {
        return match rest {
            // md5WithRSA, sha1WithRSA, sha256WithRSA, sha224WithRSA
            [0x04] | [0x05] | [0x0b] | [0x0e] => Some(Hash::Sha256),
            [0x0c] => Some(Hash::Sha384),
            [0x0d] => Some(Hash::Sha512),
            _ => None,
        };
    }
    match oid.strip_prefix(ECDSA)? {
        // ecdsa-with-SHA1, -SHA224, -SHA256
        [0x01] | [0x03, 0x01] | [0x03, 0x02] => Some(Hash::Sha256),
        [0x03, 0x03] => Some(Hash::Sha384),
        [0x03, 0x04] => Some(Hash::Sha512),
        _ => None,
    }
}

/// The OID of `Certificate.signatureAlgorithm`: the second element of the outer SEQUENCE.
fn signature_algorithm(der: &[u8]) -> Option<&[u8]> {
    const SEQUENCE: u8 = 0x30;
    const OID: u8 = 0x06;
    let (certificate, _) = tlv(der, SEQUENCE)?;
    let (_tbs, rest) = tlv(certificate, SEQUENCE)?;
    let (algorithm, _) = tlv(rest, SEQUENCE)?;
    let (oid, _) = tlv(algorithm, OID)?;
    Some(oid)
}

/// One DER element of type `tag` at the start of `input`: (its content, what follows it).
fn tlv(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&first, rest) = input.split_first()?;
    if first != tag {
        return None;
    }
    let (&len0, rest) = rest.split_first()?;
    let (len, rest) = if len0 < 0x80 {
        (usize::from(len0), rest)
    } else {
        let count = usize::from(len0 & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, rest) = rest.split_at(count);
        let len = bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, rest)
    };
    if rest.len() < len {
        return None;
    }
    Some(rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_follows_the_signature_algorithm() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["db.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().as_ref();
        assert_eq!(end_point_hash(der), Some(Sha384::digest(der).to_vec()));

        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["db.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = cert.der().as_ref();
        assert_eq!(end_point_hash(der), Some(Sha256::digest(der).to_vec()));

        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["db.example".into()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        assert_eq!(end_point_hash(cert.der().as_ref()), None);
    }

    #[test]
    fn truncated_or_foreign_input_gives_none() {
        assert_eq!(end_point_hash(&[]), None);
        assert_eq!(end_point_hash(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
        assert_eq!(end_point_hash(&[0x30, 0x03, 0x02, 0x01, 0x00]), None);
    }
}
