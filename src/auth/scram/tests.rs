//! Tests of the SCRAM-SHA-256 server against RFC 7677's vector and the real client.

use super::*;
use hmac::{Hmac, KeyInit, Mac};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use sha2::{Digest, Sha256};

// RFC 7677 §3: user "user", password "pencil".
const RFC_CLIENT_FIRST: &str = "n,,n=user,r=rOprNGfwEbeRWgbNEkqO";
const RFC_SERVER_NONCE: &str = "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const RFC_SERVER_FIRST: &str = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,\
    s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096";
const RFC_NONCE: &str = "rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
const RFC_PROOF: &str = "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
const RFC_SERVER_FINAL: &str = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=";

fn mac(key: &[u8], data: &[u8]) -> [u8; KEY_LEN] {
    let mut m = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    m.update(data);
    m.finalize().into_bytes().into()
}

/// Derives a verifier the slow way (PBKDF2 as in RFC 5802), independently of the code under
/// test, so the known-answer test checks our proof and signature arithmetic.
fn derive_verifier(password: &str, salt: &[u8], iterations: u32) -> ScramVerifier {
    let mut u = mac(password.as_bytes(), &[salt, &[0, 0, 0, 1]].concat());
    let mut salted = u;
    for _ in 1..iterations {
        u = mac(password.as_bytes(), &u);
        salted.iter_mut().zip(u).for_each(|(s, b)| *s ^= b);
    }
    let stored_key: [u8; KEY_LEN] = Sha256::digest(mac(&salted, b"Client Key")).into();
    let server_key = mac(&salted, b"Server Key");
    ScramVerifier::from_parts(iterations, salt.to_vec(), stored_key, server_key)
}

fn rfc_exchange() -> ScramExchange {
    let salt = STANDARD.decode("W22ZaJ0SNY7soEsUEjb6gQ==").unwrap();
    let verifier = derive_verifier("pencil", &salt, 4096);
    let mut exchange = ScramExchange::with_nonce(&verifier, RFC_SERVER_NONCE);
    let first = exchange
        .client_first(SCRAM_SHA_256, RFC_CLIENT_FIRST.as_bytes())
        .unwrap();
    assert_eq!(String::from_utf8(first).unwrap(), RFC_SERVER_FIRST);
    exchange
}

fn client_final(nonce: &str, proof: &str) -> Vec<u8> {
    format!("c=biws,r={nonce},p={proof}").into_bytes()
}

fn verifier_for(password: &str) -> ScramVerifier {
    ScramVerifier::parse(&postgres_protocol::password::scram_sha_256(
        password.as_bytes(),
    ))
    .unwrap()
}

/// One login by the real client; returns the server's verdict, and checks that the client
/// accepts our server-final whenever we accept its proof.
fn real_login(
    server: &mut ScramExchange,
    password: &str,
    binding: ChannelBinding,
) -> Result<(), AuthError> {
    let mut client = ScramSha256::new(password.as_bytes(), binding);
    let first = server.client_first(SCRAM_SHA_256, client.message())?;
    client.update(&first).unwrap();
    let last = server.client_final(client.message())?;
    client.finish(&last).unwrap();
    Ok(())
}

#[test]
fn rfc7677_known_answer() {
    let mut exchange = rfc_exchange();
    let last = exchange
        .client_final(&client_final(RFC_NONCE, RFC_PROOF))
        .unwrap();
    assert_eq!(String::from_utf8(last).unwrap(), RFC_SERVER_FINAL);
}

#[test]
fn real_client_accepts_our_server_final_with_a_fixed_nonce() {
    let verifier = verifier_for("s3cret");
    for binding in [ChannelBinding::unsupported(), ChannelBinding::unrequested()] {
        let mut client = ScramSha256::new(b"s3cret", binding);
        let client_first = String::from_utf8(client.message().to_vec()).unwrap();
        let client_nonce = client_first.rsplit_once("r=").unwrap().1.to_owned();
        let mut server = ScramExchange::with_nonce(&verifier, "fixedServerNonce");
        let first = server
            .client_first(SCRAM_SHA_256, client.message())
            .unwrap();
        let first = String::from_utf8(first).unwrap();
        assert!(
            first.starts_with(&format!("r={client_nonce}fixedServerNonce,s=")),
            "{first}"
        );
        assert!(first.ends_with(",i=4096"), "{first}");
        client.update(first.as_bytes()).unwrap();
        let last = server.client_final(client.message()).unwrap();
        client.finish(&last).unwrap();
    }
}

#[test]
fn wrong_password_is_wrong_password() {
    let verifier = verifier_for("s3cret");
    let mut server = ScramExchange::new(&verifier);
    let verdict = real_login(&mut server, "s3cret ", ChannelBinding::unsupported());
    assert_eq!(verdict, Err(AuthError::WrongPassword));

    let mut flipped = STANDARD.decode(RFC_PROOF).unwrap();
    flipped[0] ^= 1;
    let mut exchange = rfc_exchange();
    let verdict = exchange.client_final(&client_final(RFC_NONCE, &STANDARD.encode(flipped)));
    assert_eq!(verdict, Err(AuthError::WrongPassword));
}

#[test]
fn fresh_nonces_are_random_and_printable() {
    let verifier = verifier_for("s3cret");
    let a = ScramExchange::new(&verifier).server_nonce;
    let b = ScramExchange::new(&verifier).server_nonce;
    assert_ne!(a, b);
    assert_eq!(a.len(), 24);
    assert!(is_printable(&a));
    let mut server = ScramExchange::new(&verifier);
    real_login(&mut server, "s3cret", ChannelBinding::unsupported()).unwrap();
}

#[test]
fn tampered_nonce_is_a_protocol_error() {
    let truncated = &RFC_NONCE[..RFC_NONCE.len() - 1];
    let client_only = "rOprNGfwEbeRWgbNEkqO";
    let changed = format!("{truncated}1");
    for nonce in [truncated, client_only, changed.as_str(), ""] {
        let verdict = rfc_exchange().client_final(&client_final(nonce, RFC_PROOF));
        assert!(
            matches!(verdict, Err(AuthError::Protocol(_))),
            "{nonce}: {verdict:?}"
        );
    }
}

#[test]
fn channel_binding_is_refused() {
    let verifier = verifier_for("s3cret");
    let first = b"p=tls-server-end-point,,n=,r=abcdef";
    let mut server = ScramExchange::new(&verifier);
    assert!(matches!(
        server.client_first(SCRAM_SHA_256, first),
        Err(AuthError::Protocol(_))
    ));
    for mechanism in ["SCRAM-SHA-256-PLUS", "SCRAM-SHA-1", "", "scram-sha-256"] {
        let mut server = ScramExchange::new(&verifier);
        let verdict = server.client_first(mechanism, b"n,,n=,r=abcdef");
        assert!(
            matches!(verdict, Err(AuthError::Protocol(_))),
            "{mechanism}"
        );
    }
    // The client said "n" but claims "y" (or binding data) in client-final.
    for c in [
        "eSws",
        "cD10bHMtc2VydmVyLWVuZC1wb2ludCws",
        "",
        "biws!",
        "YmlsbGlvbg==",
    ] {
        let mut exchange = rfc_exchange();
        let msg = format!("c={c},r={RFC_NONCE},p={RFC_PROOF}");
        let verdict = exchange.client_final(msg.as_bytes());
        assert!(
            matches!(verdict, Err(AuthError::Protocol(_))),
            "{c}: {verdict:?}"
        );
    }
}

#[test]
fn malformed_client_first_is_rejected_without_panic() {
    let verifier = verifier_for("s3cret");
    let long = format!("n,,n=,r={}", "a".repeat(2000));
    let cases: Vec<&[u8]> = vec![
        b"",
        b"n",
        b"n,",
        b"n,,",
        b"n,,n=user",
        b"n,,r=abc",
        b"n,,n=user,r=",
        b"n,,n=user,x=abc",
        b"x,,n=user,r=abc",
        b"n,a=admin,n=user,r=abc",
        b"n,,m=ext,n=user,r=abc",
        b"n,,n=user,r=ab\x01c",
        b"n,,n=user,r=abc,,",
        b"n,,n=user,r=abc,1=x",
        b"n,,n=\xff\xfe,r=abc",
        long.as_bytes(),
    ];
    let mut all = cases.clone();
    // Every cut up to the empty nonce; longer cuts are valid messages with shorter nonces.
    for cut in 0..="n,,n=user,r=".len() {
        all.push(&RFC_CLIENT_FIRST.as_bytes()[..cut]);
    }
    for data in all {
        let mut server = ScramExchange::new(&verifier);
        let verdict = server.client_first(SCRAM_SHA_256, data);
        assert!(
            matches!(verdict, Err(AuthError::Protocol(_))),
            "{:?}",
            String::from_utf8_lossy(data)
        );
    }
}

#[test]
fn extensions_and_user_names_are_ignored() {
    let verifier = verifier_for("s3cret");
    let mut server = ScramExchange::new(&verifier);
    assert!(
        server
            .client_first(SCRAM_SHA_256, b"y,,n=someone=2Celse,r=abc,x=ext")
            .is_ok()
    );
}

#[test]
fn malformed_client_final_is_rejected_without_panic() {
    let good = String::from_utf8(client_final(RFC_NONCE, RFC_PROOF)).unwrap();
    let short_proof = client_final(RFC_NONCE, "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ");
    let long_proof = client_final(RFC_NONCE, &STANDARD.encode([0u8; 33]));
    let bad_b64 = client_final(RFC_NONCE, "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndV!=");
    let proof_not_last = format!("c=biws,p={RFC_PROOF},r={RFC_NONCE}");
    let bad_ext = format!("c=biws,r={RFC_NONCE},ext,p={RFC_PROOF}");
    let huge = client_final(RFC_NONCE, &"A".repeat(2000));
    let mut cases: Vec<Vec<u8>> = vec![
        Vec::new(),
        b"c=biws".to_vec(),
        format!("c=biws,r={RFC_NONCE}").into_bytes(),
        format!("c=biws,r={RFC_NONCE},p=").into_bytes(),
        format!("r={RFC_NONCE},p={RFC_PROOF}").into_bytes(),
        format!("c=biws,r={RFC_NONCE}\u{e9},p={RFC_PROOF}").into_bytes(),
        [b"c=biws,r=\xff,p=".as_slice(), RFC_PROOF.as_bytes()].concat(),
        short_proof,
        long_proof,
        bad_b64,
        proof_not_last.into_bytes(),
        bad_ext.into_bytes(),
        huge,
    ];
    for cut in 0..good.len() {
        cases.push(good.as_bytes()[..cut].to_vec());
    }
    for data in cases {
        let verdict = rfc_exchange().client_final(&data);
        assert!(
            matches!(verdict, Err(AuthError::Protocol(_))),
            "{:?}",
            String::from_utf8_lossy(&data)
        );
    }
}

#[test]
fn steps_out_of_order_and_retries_are_refused() {
    let verifier = verifier_for("s3cret");
    let mut server = ScramExchange::new(&verifier);
    assert!(matches!(
        server.client_final(b"c=biws"),
        Err(AuthError::Protocol(_))
    ));
    // The failed step ended the exchange.
    assert!(
        server
            .client_first(SCRAM_SHA_256, RFC_CLIENT_FIRST.as_bytes())
            .is_err()
    );

    let mut exchange = rfc_exchange();
    let again = exchange.client_first(SCRAM_SHA_256, RFC_CLIENT_FIRST.as_bytes());
    assert!(matches!(again, Err(AuthError::Protocol(_))));

    // No second guess after a wrong proof, and nothing after success.
    let mut exchange = rfc_exchange();
    let zero_proof = STANDARD.encode([0u8; KEY_LEN]);
    let wrong = exchange.client_final(&client_final(RFC_NONCE, &zero_proof));
    assert_eq!(wrong, Err(AuthError::WrongPassword));
    let retry = exchange.client_final(&client_final(RFC_NONCE, RFC_PROOF));
    assert!(matches!(retry, Err(AuthError::Protocol(_))));

    let mut exchange = rfc_exchange();
    exchange
        .client_final(&client_final(RFC_NONCE, RFC_PROOF))
        .unwrap();
    let replay = exchange.client_final(&client_final(RFC_NONCE, RFC_PROOF));
    assert!(matches!(replay, Err(AuthError::Protocol(_))));
}

#[test]
fn bad_fixed_server_nonce_fails_cleanly() {
    let verifier = verifier_for("s3cret");
    for nonce in ["a,b", "", "caf\u{e9}"] {
        let mut server = ScramExchange::with_nonce(&verifier, nonce);
        let verdict = server.client_first(SCRAM_SHA_256, RFC_CLIENT_FIRST.as_bytes());
        assert!(matches!(verdict, Err(AuthError::Protocol(_))), "{nonce}");
    }
}

fn salt_of(server_first: &[u8]) -> String {
    let text = std::str::from_utf8(server_first).unwrap();
    let salt = text.split(',').find_map(|a| a.strip_prefix("s=")).unwrap();
    salt.to_owned()
}

#[test]
fn mock_exchange_fails_like_a_wrong_password() {
    let mut mock = ScramExchange::mock("ghost", b"process mock key");
    let verdict = real_login(&mut mock, "anything", ChannelBinding::unsupported());
    assert_eq!(verdict, Err(AuthError::WrongPassword));

    // It still enforces the protocol, as a real exchange would.
    let mut mock = ScramExchange::mock("ghost", b"process mock key");
    mock.client_first(SCRAM_SHA_256, b"n,,n=,r=abc").unwrap();
    let verdict = mock.client_final(&client_final("abc", RFC_PROOF));
    assert!(matches!(verdict, Err(AuthError::Protocol(_))));
}

#[test]
fn mock_salt_is_stable_per_user_and_key() {
    let first = |user: &str, key: &[u8]| {
        let mut mock = ScramExchange::mock(user, key);
        mock.client_first(SCRAM_SHA_256, RFC_CLIENT_FIRST.as_bytes())
            .unwrap()
    };
    let a1 = first("ghost", b"key one");
    let a2 = first("ghost", b"key one");
    assert_eq!(salt_of(&a1), salt_of(&a2));
    assert_ne!(a1, a2, "nonces must still be fresh");
    assert_ne!(salt_of(&a1), salt_of(&first("phantom", b"key one")));
    assert_ne!(salt_of(&a1), salt_of(&first("ghost", b"key two")));
    assert_eq!(STANDARD.decode(salt_of(&a1)).unwrap().len(), SALT_LEN);
    assert!(String::from_utf8(a1).unwrap().ends_with(",i=4096"));
}

#[test]
fn doomed_exchange_fails_even_with_the_right_proof() {
    // Mock keys are random, so only this shows that `doomed` alone decides the verdict.
    let mut server = ScramExchange::new(&verifier_for("s3cret"));
    server.doomed = true;
    let verdict = real_login(&mut server, "s3cret", ChannelBinding::unsupported());
    assert_eq!(verdict, Err(AuthError::WrongPassword));
}
