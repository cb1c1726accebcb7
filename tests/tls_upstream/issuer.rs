//! The issuer's admin connection with `sslmode`, `sslrootcert`, `sslcert` and `sslkey` in
//! `admin_url`, against the TLS cluster.

use pglease::config::IssuerConfig;
use pglease::credentials::Source;
use pglease::credentials::issuer::IssuerSource;
use pglease::secret::Secret;

use crate::common::tls::{socket_superuser, tls_world};

/// An issuer config whose admin connection goes to the TLS cluster as `host` with `tls_params`
/// (the `sslmode`/`sslrootcert`/… query parameters), tagged with `application_name = tag`.
fn issuer_config(host: &str, tag: &str, tls_params: &str) -> IssuerConfig {
    let cluster = &tls_world().cluster;
    let url = format!(
        "postgres://{}:{}@{host}:{}/postgres?application_name={tag}&{tls_params}",
        cluster.superuser(),
        cluster.superuser_password().expose(),
        cluster.port()
    );
    let mut config = IssuerConfig::new(Secret::new(url));
    config.prefix = tag.to_owned();
    config
}

#[tokio::test]
async fn the_issuer_admin_connection_is_verified_under_verify_full() {
    let world = tls_world();
    let admin = socket_superuser(&world.cluster).await;
    let params = format!(
        "sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
        world.ca.display(),
        world.client_cert.display(),
        world.client_key.display()
    );
    let config = issuer_config("localhost", "issvfull", &params);
    let issuer = IssuerSource::new("issvfull", &config)
        .await
        .unwrap_or_else(|e| panic!("issuer over verify-full: {e}"));
    let lease = issuer.acquire().await.expect("acquire over TLS");
    let row = admin
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE s.ssl AND s.client_dn = '/CN=postgres') \
             FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
             WHERE a.application_name = 'issvfull'",
            &[],
        )
        .await
        .expect("pg_stat_ssl");
    let (total, encrypted): (i64, i64) = (row.get(0), row.get(1));
    assert!(total >= 1, "the admin connection is not there");
    assert_eq!(
        total, encrypted,
        "the admin connection uses TLS with the client cert"
    );
    issuer.revoke(&lease).await.expect("revoke");
}

#[tokio::test]
async fn the_issuer_refuses_a_wrong_ca_and_a_wrong_host() {
    let world = tls_world();
    let wrong_ca = format!(
        "sslmode=verify-full&sslrootcert={}",
        world.other_ca.display()
    );
    let config = issuer_config("localhost", "isswrongca", &wrong_ca);
    let err = IssuerSource::new("isswrongca", &config)
        .await
        .err()
        .expect("must fail");
    assert!(format!("{err}").contains("unknown issuer"), "{err}");

    let right_ca = format!("sslmode=verify-full&sslrootcert={}", world.ca.display());
    let config = issuer_config("127.0.0.1", "isswronghost", &right_ca);
    let err = IssuerSource::new("isswronghost", &config)
        .await
        .err()
        .expect("must fail");
    assert!(format!("{err}").contains("name mismatch"), "{err}");

    // verify-ca checks the chain only, as libpq.
    let verify_ca = format!("sslmode=verify-ca&sslrootcert={}", world.ca.display());
    let config = issuer_config("127.0.0.1", "issvca", &verify_ca);
    IssuerSource::new("issvca", &config)
        .await
        .unwrap_or_else(|e| panic!("verify-ca: {e}"));
}
