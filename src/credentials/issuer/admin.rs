//! The admin connection's settings from `admin_url`: tokio-postgres parses the URL, except
//! the TLS parameters it does not know (`sslmode=verify-ca|verify-full`, `sslrootcert`,
//! `sslcert`, `sslkey`), which are taken out here and become a rustls configuration with
//! libpq's meanings. `sslrootcert` absent (or `system`) means the system's roots.

use std::path::PathBuf;

use tokio_postgres::config::SslMode;

use super::SourceError;
use crate::config::UpstreamTlsMode;
use crate::tls::client::{ClientTlsFiles, client_config};
use crate::tls::postgres::MakeRustls;

/// What the issuer connects with.
pub(super) struct Admin {
    /// Everything but the TLS parameters, parsed by tokio-postgres.
    pub config: tokio_postgres::Config,
    /// The connector; tokio-postgres uses it unless `sslmode=disable`.
    pub tls: MakeRustls,
}

/// Splits `url` into tokio-postgres' config and the TLS connector. Errors never quote the URL,
/// which holds the admin password.
pub(super) fn parse(url: &str) -> Result<Admin, SourceError> {
    let (rest, tls) = take_tls_params(url)?;
    let mut config = rest
        .parse::<tokio_postgres::Config>()
        .map_err(|_| rejected("admin_url is not a valid PostgreSQL URL"))?;
    let mode = match tls.mode.as_deref() {
        None | Some("prefer") => UpstreamTlsMode::Prefer,
        Some("disable") => UpstreamTlsMode::Disable,
        Some("require") => UpstreamTlsMode::Require,
        Some("verify-ca") => UpstreamTlsMode::VerifyCa,
        Some("verify-full") => UpstreamTlsMode::VerifyFull,
        Some(_) => return Err(rejected("admin_url: unknown sslmode")),
    };
    config.ssl_mode(match mode {
        UpstreamTlsMode::Disable => SslMode::Disable,
        UpstreamTlsMode::Prefer => SslMode::Prefer,
        _ => SslMode::Require,
    });
    let rustls = client_config(mode, &tls.files)
        .map_err(|e| SourceError::Rejected(format!("admin_url TLS: {e}")))?;
    Ok(Admin {
        config,
        tls: MakeRustls::new(rustls),
    })
}

fn rejected(message: &str) -> SourceError {
    SourceError::Rejected(message.into())
}

#[derive(Debug, Default, PartialEq)]
struct TlsParams {
    mode: Option<String>,
    files: ClientTlsFiles,
}

/// Removes the four TLS parameters from a `postgres://` URL's query or a `key=value`
/// connection string, returning what is left and their values.
fn take_tls_params(url: &str) -> Result<(String, TlsParams), SourceError> {
    let mut params = TlsParams::default();
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let (base, pairs, separator): (&str, Vec<&str>, &str) = if is_url {
        match url.split_once('?') {
            Some((base, query)) => (base, query.split('&').collect(), "&"),
            None => return Ok((url.to_owned(), params)),
        }
    } else {
        ("", url.split_whitespace().collect(), " ")
    };
    let mut kept = Vec::new();
    for pair in pairs {
        let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
        let value = if is_url {
            percent_decode(raw).ok_or_else(|| rejected("admin_url: bad percent-encoding"))?
        } else {
            raw.to_owned()
        };
        let file = || (!value.is_empty() && value != "system").then(|| PathBuf::from(&value));
        match key {
            "sslmode" => params.mode = Some(value.clone()),
            "sslrootcert" => params.files.ca = file(),
            "sslcert" => params.files.cert = Some(PathBuf::from(&value)),
            "sslkey" => params.files.key = Some(PathBuf::from(&value)),
            _ => kept.push(pair),
        }
    }
    let joined = kept.join(separator);
    let rest = match (is_url, joined.is_empty()) {
        (true, true) => base.to_owned(),
        (true, false) => format!("{base}?{joined}"),
        (false, _) => joined,
    };
    Ok((rest, params))
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_parameters_are_taken_out_of_a_url() {
        let (rest, p) = take_tls_params(
            "postgres://u:p@db:5432/x?sslmode=verify-full&application_name=a&sslrootcert=%2Fca%20dir%2Fca.pem&sslcert=/c.pem&sslkey=/k.pem",
        )
        .unwrap();
        assert_eq!(rest, "postgres://u:p@db:5432/x?application_name=a");
        assert_eq!(p.mode.as_deref(), Some("verify-full"));
        assert_eq!(p.files.ca, Some(PathBuf::from("/ca dir/ca.pem")));
        assert_eq!(p.files.cert, Some(PathBuf::from("/c.pem")));
        assert_eq!(p.files.key, Some(PathBuf::from("/k.pem")));
    }

    #[test]
    fn tls_parameters_are_taken_out_of_a_key_value_string() {
        let (rest, p) =
            take_tls_params("host=db user=u sslmode=verify-ca sslrootcert=system").unwrap();
        assert_eq!(rest, "host=db user=u");
        assert_eq!(p.mode.as_deref(), Some("verify-ca"));
        assert_eq!(p.files.ca, None);
    }

    #[test]
    fn a_url_without_query_is_untouched_and_unknown_modes_are_refused() {
        let (rest, p) = take_tls_params("postgres://u@db/x").unwrap();
        assert_eq!(
            (rest.as_str(), p),
            ("postgres://u@db/x", TlsParams::default())
        );
        assert!(parse("postgres://u@db/x?sslmode=verify-everything").is_err());
        assert!(
            parse("postgres://u@db/x?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem").is_err()
        );
        assert!(parse("postgres://u@db/x?sslmode=require").is_ok());
    }
}
