//! TLS clusters for the upstream-TLS tests: a PostgreSQL with `ssl = on` whose TCP rules are
//! `hostssl` only, its server certificate (for `localhost` only) from a test CA made with
//! rcgen, and a second CA that signed nothing the server shows. Also a plaintext cluster whose
//! TCP rule is `password` (cleartext), for the login policy. Each starts once per test binary,
//! on first use; tests that do not ask for them get the ordinary cluster only.

use std::path::PathBuf;
use std::sync::OnceLock;

use pglease::dev::cluster::{Cluster, ClusterOptions};
use tokio_postgres::{Client, NoTls};

use super::describe;

/// The TLS cluster and the files a client needs to judge it.
pub struct TlsWorld {
    /// `ssl = on`, `hostssl` only on TCP; the unix socket takes the superuser.
    pub cluster: Cluster,
    /// PEM of the CA that signed the server certificate.
    pub ca: PathBuf,
    /// PEM of another CA: a server certificate does not chain to it.
    pub other_ca: PathBuf,
    /// Client certificate and key signed by the CA (for `upstream_tls_cert`/`sslcert`).
    pub client_cert: PathBuf,
    /// Key of `client_cert`.
    pub client_key: PathBuf,
}

static TLS: OnceLock<Result<TlsWorld, String>> = OnceLock::new();
static PASSWORD: OnceLock<Result<Cluster, String>> = OnceLock::new();

/// A self-signed CA with `name` as its common name.
pub fn test_ca(name: &str) -> rcgen::CertifiedIssuer<'static, rcgen::KeyPair> {
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
    rcgen::CertifiedIssuer::self_signed(params, key).expect("CA cert")
}

/// A certificate for `names` signed by `ca`, as (certificate PEM, key PEM).
pub fn signed_cert(
    ca: &rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    names: &[&str],
    common_name: &str,
) -> (String, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params =
        rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
            .expect("params");
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, common_name);
    let cert = params.signed_by(&key, ca).expect("cert");
    (cert.pem(), key.serialize_pem())
}

fn start_tls() -> Result<TlsWorld, String> {
    let ca = test_ca("pglease upstream test CA");
    let other = test_ca("pglease unrelated CA");
    let (server_cert, server_key) = signed_cert(&ca, &["localhost"], "localhost");
    let (client_cert, client_key) = signed_cert(&ca, &[], "postgres");
    let options = ClusterOptions {
        settings: vec![
            ("ssl".into(), "on".into()),
            ("ssl_cert_file".into(), "'server.crt'".into()),
            ("ssl_key_file".into(), "'server.key'".into()),
            ("ssl_ca_file".into(), "'root.crt'".into()),
        ],
        data_files: vec![
            ("server.crt".into(), server_cert.into_bytes()),
            ("server.key".into(), server_key.into_bytes()),
            ("root.crt".into(), ca.pem().into_bytes()),
        ],
        hba: Some(
            "local all all scram-sha-256\n\
             hostssl all all 127.0.0.1/32 scram-sha-256\n\
             hostssl all all ::1/128 scram-sha-256\n"
                .into(),
        ),
        ..ClusterOptions::default()
    };
    let cluster = Cluster::start(options).map_err(|e| e.to_string())?;
    // The cluster's private directory, which goes with it even when the binary is killed.
    let dir = cluster
        .socket_dir()
        .parent()
        .ok_or("the cluster has no directory")?
        .to_owned();
    let write = |name: &str, text: &str| -> Result<PathBuf, String> {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(path)
    };
    Ok(TlsWorld {
        ca: write("ca.pem", &ca.pem())?,
        other_ca: write("other-ca.pem", &other.pem())?,
        client_cert: write("client.crt", &client_cert)?,
        client_key: write("client.key", &client_key)?,
        cluster,
    })
}

/// The TLS cluster of this test binary, started on first use.
pub fn tls_world() -> &'static TlsWorld {
    match TLS.get_or_init(start_tls) {
        Ok(world) => world,
        Err(e) => panic!("cannot start the TLS test PostgreSQL: {e}"),
    }
}

/// A cluster whose TCP rule asks for the password in cleartext (`password`), without TLS.
pub fn password_cluster() -> &'static Cluster {
    let started = PASSWORD.get_or_init(|| {
        let options = ClusterOptions {
            hba: Some(
                "local all all scram-sha-256\n\
                 host all all 127.0.0.1/32 password\n"
                    .into(),
            ),
            ..ClusterOptions::default()
        };
        Cluster::start(options).map_err(|e| e.to_string())
    });
    match started {
        Ok(cluster) => cluster,
        Err(e) => panic!("cannot start the password-auth test PostgreSQL: {e}"),
    }
}

/// A superuser connection to `cluster` over its unix socket (TCP may demand TLS there).
pub async fn socket_superuser(cluster: &Cluster) -> Client {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(cluster.socket_dir())
        .port(cluster.port())
        .user(cluster.superuser())
        .password(cluster.superuser_password().expose())
        .dbname("postgres");
    let (client, conn) = config
        .connect(NoTls)
        .await
        .unwrap_or_else(|e| panic!("superuser socket connection failed: {}", describe(&e)));
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}
