//! Tests of certificate loading, reloading and the end-point hash.

use super::*;
use sha2::{Digest, Sha256, Sha384};

/// A self-signed certificate for 127.0.0.1 with a key of `alg`: (cert PEM, key PEM, cert DER).
fn self_signed(alg: &'static rcgen::SignatureAlgorithm) -> (String, String, Vec<u8>) {
    let key = rcgen::KeyPair::generate_for(alg).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    (cert.pem(), key.serialize_pem(), cert.der().to_vec())
}

fn write_pair(dir: &Path, cert: &str, key: &str) -> (PathBuf, PathBuf) {
    let (c, k) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    (c, k)
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("pglease-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn end_point_hash_follows_the_signature_hash() {
    let (_, _, p256) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
    assert_eq!(end_point_hash(&p256), Some(Sha256::digest(&p256).to_vec()));
    let (_, _, p384) = self_signed(&rcgen::PKCS_ECDSA_P384_SHA384);
    assert_eq!(end_point_hash(&p384), Some(Sha384::digest(&p384).to_vec()));
    // Ed25519 has no separate hash: RFC 5929 defines no binding, so PLUS is not offered.
    let (_, _, ed) = self_signed(&rcgen::PKCS_ED25519);
    assert_eq!(end_point_hash(&ed), None);
}

#[test]
fn end_point_hash_never_panics_on_garbage() {
    let (_, _, der) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
    for cut in 0..der.len() {
        let _ = end_point_hash(&der[..cut]);
    }
    assert_eq!(end_point_hash(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    assert_eq!(end_point_hash(b""), None);
}

#[test]
fn broken_files_are_named_in_the_error() {
    let dir = temp_dir("broken");
    let (cert, key, _) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
    let (c, k) = write_pair(&dir, &cert, "not a key");
    let err = load_files(&c, &k).err().unwrap().to_string();
    assert!(err.contains("server.key"), "{err}");
    let (c, k) = write_pair(&dir, "not a cert", &key);
    let err = load_files(&c, &k).err().unwrap().to_string();
    assert!(err.contains("server.crt"), "{err}");
    // A key that is not the certificate's.
    let (_, other_key, _) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
    let (c, k) = write_pair(&dir, &cert, &other_key);
    assert!(matches!(
        load_files(&c, &k),
        Err(ServerTlsError::Pair { .. })
    ));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn reload_reads_the_files_at_once_and_keeps_the_old_pair_on_failure() {
    let dir = temp_dir("forced");
    let (cert, key, first) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
    let (c, k) = write_pair(&dir, &cert, &key);
    let tls = ServerTls::load(&c, &k).unwrap();
    let (cert2, key2, second) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
    write_pair(&dir, &cert2, &key);
    // The new certificate with the old key: refused, the first pair stays.
    assert!(matches!(tls.reload(), Err(ServerTlsError::Pair { .. })));
    let first_hash = Sha256::digest(&first).to_vec();
    assert_eq!(tls.current().end_point.as_deref(), Some(&first_hash[..]));
    write_pair(&dir, &cert2, &key2);
    tls.reload().unwrap();
    let second_hash = Sha256::digest(&second).to_vec();
    assert_eq!(tls.current().end_point.as_deref(), Some(&second_hash[..]));
    let _ = std::fs::remove_dir_all(&dir);
}

/// Pretends the last check was long ago, so the next `current` looks at the files.
fn expire(tls: &ServerTls) {
    let mut state = tls.state.lock().unwrap();
    state.checked = Instant::now().checked_sub(RECHECK).unwrap_or(state.checked);
}

#[test]
fn a_changed_file_is_served_and_a_broken_one_keeps_the_old() {
    let dir = temp_dir("reload");
    let (cert, key, first) = self_signed(&rcgen::PKCS_ECDSA_P256_SHA256);
    let (c, k) = write_pair(&dir, &cert, &key);
    let tls = ServerTls::load(&c, &k).unwrap();
    let first_hash = Sha256::digest(&first).to_vec();
    assert_eq!(tls.current().end_point.as_deref(), Some(&first_hash[..]));

    let (cert2, key2, second) = self_signed(&rcgen::PKCS_ECDSA_P384_SHA384);
    write_pair(&dir, &cert2, &key2);
    // Not looked at again within RECHECK of the last check.
    assert_eq!(tls.current().end_point.as_deref(), Some(&first_hash[..]));
    expire(&tls);
    let second_hash = Sha384::digest(&second).to_vec();
    assert_eq!(tls.current().end_point.as_deref(), Some(&second_hash[..]));

    std::fs::write(&c, "garbage that is not PEM").unwrap();
    expire(&tls);
    assert_eq!(tls.current().end_point.as_deref(), Some(&second_hash[..]));
    let _ = std::fs::remove_dir_all(&dir);
}
