//! Test certificates: a CA per test, server certificates for 127.0.0.1 signed by it, and the
//! files the proxy and psql read them from.

use std::path::{Path, PathBuf};

/// A test certificate authority.
pub struct Ca {
    issuer: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
}

impl Ca {
    /// A fresh CA whose certificate says `name`.
    pub fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().expect("CA key");
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let issuer = rcgen::CertifiedIssuer::self_signed(params, key).expect("CA cert");
        Ca { issuer }
    }

    /// The CA certificate, PEM (what a client trusts).
    pub fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A server certificate for 127.0.0.1 and localhost: (cert PEM, key PEM).
    pub fn server_cert(&self) -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("server key");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".into()])
            .expect("server params")
            .signed_by(&key, &self.issuer)
            .expect("server cert");
        (cert.pem(), key.serialize_pem())
    }
}

/// A temporary directory holding the proxy's certificate and key and the CAs clients trust.
pub struct Files {
    /// Removed when the value is dropped.
    pub dir: PathBuf,
}

impl Files {
    /// A fresh directory named after the test.
    pub fn new(tag: &str) -> Files {
        let dir = std::env::temp_dir().join(format!("pglease-tls-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Files { dir }
    }

    /// The proxy's certificate file.
    pub fn cert(&self) -> PathBuf {
        self.dir.join("server.crt")
    }

    /// The proxy's key file.
    pub fn key(&self) -> PathBuf {
        self.dir.join("server.key")
    }

    /// Installs a new server certificate from `ca` as the proxy's files.
    pub fn install_server_cert(&self, ca: &Ca) {
        let (cert, key) = ca.server_cert();
        write(&self.cert(), &cert);
        write(&self.key(), &key);
    }

    /// Writes `ca`'s certificate as `<name>.pem` and returns its path.
    pub fn trust(&self, name: &str, ca: &Ca) -> PathBuf {
        let path = self.dir.join(format!("{name}.pem"));
        write(&path, &ca.pem());
        path
    }

    /// The `[proxy]` lines turning client TLS on in `mode` with these files.
    pub fn proxy_lines(&self, mode: &str) -> String {
        format!(
            "client_tls = \"{mode}\"\nclient_tls_cert = \"{}\"\nclient_tls_key = \"{}\"",
            self.cert().display(),
            self.key().display()
        )
    }
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}
