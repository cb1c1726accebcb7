//! Tests of SCRAM-SHA-256-PLUS (`tls-server-end-point`) negotiation against the real client.

use super::*;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};

const END_POINT: &[u8] = &[7u8; 32];

fn verifier() -> ScramVerifier {
    ScramVerifier::parse(&postgres_protocol::password::scram_sha_256(b"s3cret")).unwrap()
}

/// One login by the real client choosing `mechanism` with `binding`, against a server that
/// offers PLUS with [`END_POINT`] when `offered`.
fn login(offered: bool, mechanism: &str, binding: ChannelBinding) -> Result<(), AuthError> {
    let mut server = ScramExchange::new(&verifier());
    if offered {
        server.offer_channel_binding(END_POINT);
    }
    let mut client = ScramSha256::new(b"s3cret", binding);
    let first = server.client_first(mechanism, client.message())?;
    client.update(&first).unwrap();
    let last = server.client_final(client.message())?;
    client.finish(&last).unwrap();
    Ok(())
}

#[test]
fn plus_is_listed_first_only_when_offered() {
    let mut server = ScramExchange::new(&verifier());
    assert_eq!(server.mechanisms(), &[SCRAM_SHA_256]);
    server.offer_channel_binding(END_POINT);
    assert_eq!(server.mechanisms(), &[SCRAM_SHA_256_PLUS, SCRAM_SHA_256]);
}

#[test]
fn matching_binding_logs_in() {
    let binding = ChannelBinding::tls_server_end_point(END_POINT.to_vec());
    login(true, SCRAM_SHA_256_PLUS, binding).unwrap();
    // A client that cannot bind at all ("n") may still use the plain mechanism over TLS.
    login(true, SCRAM_SHA_256, ChannelBinding::unsupported()).unwrap();
}

#[test]
fn mismatching_binding_is_refused() {
    let binding = ChannelBinding::tls_server_end_point(vec![8u8; 32]);
    let verdict = login(true, SCRAM_SHA_256_PLUS, binding);
    assert!(
        matches!(verdict, Err(AuthError::Protocol(m)) if m.contains("binding check failed")),
        "{verdict:?}"
    );
}

#[test]
fn negotiation_mistakes_are_refused() {
    let bind = || ChannelBinding::tls_server_end_point(END_POINT.to_vec());
    let cases = [
        // Binding over a connection that offered none (plaintext).
        (false, SCRAM_SHA_256_PLUS, bind()),
        (false, SCRAM_SHA_256, bind()),
        // "y" (client thinks we cannot bind) when we offered PLUS: a downgrade.
        (true, SCRAM_SHA_256, ChannelBinding::unrequested()),
        // Binding data with the plain mechanism, or PLUS without binding data.
        (true, SCRAM_SHA_256, bind()),
        (true, SCRAM_SHA_256_PLUS, ChannelBinding::unsupported()),
        (true, SCRAM_SHA_256_PLUS, ChannelBinding::unrequested()),
    ];
    for (offered, mechanism, binding) in cases {
        let verdict = login(offered, mechanism, binding);
        assert!(
            matches!(verdict, Err(AuthError::Protocol(_))),
            "{offered} {mechanism}: {verdict:?}"
        );
    }
}

#[test]
fn unknown_binding_types_and_malformed_headers_are_refused() {
    for first in [
        &b"p=tls-unique,,n=,r=abc"[..],
        b"p=,,n=,r=abc",
        b"p=tls-server-end-point",
        b"p",
        b"ptls-server-end-point,,n=,r=abc",
    ] {
        let mut server = ScramExchange::new(&verifier());
        server.offer_channel_binding(END_POINT);
        let verdict = server.client_first(SCRAM_SHA_256_PLUS, first);
        assert!(
            matches!(verdict, Err(AuthError::Protocol(_))),
            "{:?}: {verdict:?}",
            String::from_utf8_lossy(first)
        );
    }
}
