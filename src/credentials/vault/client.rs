//! The HTTP side of the Vault source: one `reqwest::Client` per source, the headers every
//! request carries, bounded response bodies, and the mapping of Vault's answers onto errors
//! that say whether retrying can help.
//!
//! Redirects are never followed: reqwest would resend `X-Vault-Token` to wherever a `Location`
//! points (it strips only the standard credential headers), so a 3xx is an error that names
//! the status and where it pointed. A Vault standby answers 307 to its active node when
//! request forwarding is off; the fix is an `address` that reaches the active node.

use std::fmt;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use thiserror::Error;
use tracing::{debug, warn};
use zeroize::Zeroizing;

use super::response::error_messages;
use crate::config::{VaultConfig, plaintext_remote_host};
use crate::credentials::SourceError;
use crate::secret::Secret;

/// Largest response body read, in bytes. Vault's answers here are a few hundred bytes; the cap
/// keeps a misdirected address (a file server, a proxy's error page) from costing memory.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// Both the TCP/TLS connect and the whole request must finish within this, so a Vault that
/// hangs shows up as unreachable and the rotator's backoff takes over.
const TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many of Vault's error strings are quoted in an error.
const MAX_ERROR_STRINGS: usize = 4;

/// Why one Vault request failed. Carries no token, password, secret_id or response data:
/// only the request line, the HTTP status and Vault's own error strings (scrubbed of any
/// secret the request carried).
#[derive(Debug, Error)]
pub enum CallError {
    /// No answer: connection refused, TLS failure, timeout.
    #[error("vault {request}: {detail}")]
    Transport {
        /// `METHOD /v1/path`.
        request: String,
        /// What went wrong, from the HTTP client's error chain.
        detail: String,
    },
    /// Vault answered with a status other than success.
    #[error("vault {request}: HTTP {status}{}", ErrorList(.errors))]
    Status {
        /// `METHOD /v1/path`.
        request: String,
        /// The HTTP status.
        status: StatusCode,
        /// Vault's `errors` strings.
        errors: Vec<String>,
    },
    /// Vault (or something in front of it) answered with a redirect, which is not followed.
    #[error(
        "vault {request}: HTTP {status}{}: redirects are not followed (they would carry the \
         token elsewhere); set `address` to the node that answers",
        RedirectTarget(.to)
    )]
    Redirect {
        /// `METHOD /v1/path`.
        request: String,
        /// The 3xx status.
        status: StatusCode,
        /// Scheme, host and port of the `Location`, when it had one; never its path or query.
        to: Option<String>,
    },
    /// A successful answer pglease cannot use: not JSON, too large, fields missing or mistyped.
    #[error("vault {request}: {detail}")]
    Malformed {
        /// `METHOD /v1/path`.
        request: String,
        /// Which field or property was wrong.
        detail: String,
    },
}

impl CallError {
    /// A successful answer to `method path` that lacks what the caller needs.
    pub fn malformed(method: &Method, path: &str, detail: impl Into<String>) -> CallError {
        CallError::Malformed {
            request: format!("{method} /v1/{path}"),
            detail: detail.into(),
        }
    }

    /// True for Vault's `403 permission denied`: the token is unknown, expired or revoked
    /// (or lacks the policy), so a fresh login may help.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, CallError::Status { status, .. } if *status == StatusCode::FORBIDDEN)
    }
}

impl From<CallError> for SourceError {
    /// 5xx (sealed, standby trouble), 429 (rate limited) and transport failures may pass by
    /// themselves: the rotator retries them. Other answers need someone to change something.
    fn from(e: CallError) -> SourceError {
        let transient = match &e {
            CallError::Transport { .. } => true,
            CallError::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            CallError::Redirect { .. } | CallError::Malformed { .. } => false,
        };
        if transient {
            SourceError::Unreachable(e.to_string())
        } else {
            SourceError::Rejected(e.to_string())
        }
    }
}

struct ErrorList<'a>(&'a [String]);

struct RedirectTarget<'a>(&'a Option<String>);

impl fmt::Display for RedirectTarget<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(to) => write!(f, " to {to}"),
            None => Ok(()),
        }
    }
}

impl fmt::Display for ErrorList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.0.is_empty() {
            write!(f, ": {}", self.0.join("; "))?;
        }
        Ok(())
    }
}

/// Talks to one Vault server. Cheap to share behind an `Arc`; `reqwest::Client` pools
/// connections itself.
pub struct VaultClient {
    http: reqwest::Client,
    /// `address` without a trailing slash.
    base: String,
    /// Sent as `X-Vault-Namespace` on every request when set.
    namespace: Option<String>,
}

impl VaultClient {
    /// Builds the HTTP client: timeouts, and the `ca_file` bundle as the only trusted roots
    /// when one is configured. Fails on an unreadable or empty bundle.
    pub fn new(config: &VaultConfig) -> Result<VaultClient, SourceError> {
        if let Some(host) = plaintext_remote_host(&config.address) {
            warn!(
                %host,
                "vault address is plain http:// to a host that is not loopback: the token and \
                 every database password cross the network unencrypted; use https://"
            );
        }
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(TIMEOUT)
            .timeout(TIMEOUT)
            .user_agent(concat!("pglease/", env!("CARGO_PKG_VERSION")));
        if let Some(path) = &config.ca_file {
            let shown = path.display();
            let pem = std::fs::read(path)
                .map_err(|e| SourceError::Rejected(format!("vault ca_file {shown}: {e}")))?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                SourceError::Rejected(format!("vault ca_file {shown}: not a PEM bundle: {e}"))
            })?;
            if certs.is_empty() {
                return Err(SourceError::Rejected(format!(
                    "vault ca_file {shown}: no certificate in it"
                )));
            }
            builder = builder.tls_built_in_root_certs(false);
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        let http = builder
            .build()
            .map_err(|e| SourceError::Rejected(format!("vault client: {}", chain(&e))))?;
        Ok(VaultClient {
            http,
            base: config.address.trim_end_matches('/').to_owned(),
            namespace: config.namespace.clone(),
        })
    }

    /// Sends one request to `/v1/{path}` and returns the parsed JSON body, `None` for an empty
    /// success (204). `token` goes in `X-Vault-Token`; `scrub` lists secrets the request carries
    /// that must not come back in an error (Vault's messages are quoted in errors).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        token: Option<&Secret>,
        scrub: &[&Secret],
    ) -> Result<Option<Value>, CallError> {
        let request = format!("{method} /v1/{path}");
        let mut req = self
            .http
            .request(method, format!("{}/v1/{path}", self.base))
            .header("X-Vault-Request", "true");
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(token) = token {
            let mut value =
                reqwest::header::HeaderValue::from_str(token.expose()).map_err(|_| {
                    CallError::Malformed {
                        request: request.clone(),
                        detail: "the Vault token is not a valid header value".into(),
                    }
                })?;
            value.set_sensitive(true);
            req = req.header("X-Vault-Token", value);
        }
        if let Some(body) = body {
            // Serializing a `Value` cannot fail: its keys are strings and numbers are finite.
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(serde_json::to_vec(&body).unwrap_or_default());
        }
        let response = req.send().await.map_err(|e| CallError::Transport {
            request: request.clone(),
            detail: transport_detail(&e),
        })?;
        let status = response.status();
        if status.is_redirection() {
            return Err(CallError::Redirect {
                request,
                status,
                to: redirect_origin(&response),
            });
        }
        let bytes = read_capped(response)
            .await
            .map_err(|detail| CallError::Malformed {
                request: request.clone(),
                detail,
            })?;
        if !status.is_success() {
            let mut errors = error_messages(&bytes, MAX_ERROR_STRINGS);
            let mut secrets: Vec<&Secret> = scrub.to_vec();
            secrets.extend(token);
            for e in &mut errors {
                *e = scrubbed(e, &secrets);
            }
            return Err(CallError::Status {
                request,
                status,
                errors,
            });
        }
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(None);
        }
        let value: Value = serde_json::from_slice(&bytes).map_err(|e| CallError::Malformed {
            request: request.clone(),
            detail: format!(
                "response is not JSON (line {}, column {})",
                e.line(),
                e.column()
            ),
        })?;
        if let Some(Value::Array(warnings)) = value.get("warnings") {
            debug!(%request, ?warnings, "vault answered with warnings");
        }
        Ok(Some(value))
    }
}

/// Scheme, host and port of a redirect's `Location` (relative ones resolved against the
/// request). Only the origin is kept: an operator needs to know which server answered, and a
/// path or query is no business of a log line.
fn redirect_origin(response: &reqwest::Response) -> Option<String> {
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)?
        .to_str()
        .ok()?;
    let url = response.url().join(location).ok()?;
    let origin = url.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// Turns a successful answer into `T` with `parse`; an empty answer is malformed too.
pub fn parsed<T>(
    method: &Method,
    path: &str,
    body: Option<Value>,
    parse: impl FnOnce(Value) -> Result<T, String>,
) -> Result<T, CallError> {
    let body = body.ok_or_else(|| CallError::malformed(method, path, "empty response"))?;
    parse(body).map_err(|detail| CallError::malformed(method, path, detail))
}

/// Reads the body, refusing to hold more than [`MAX_BODY_BYTES`]. Zeroized on drop: the body
/// may carry a password or token.
async fn read_capped(mut response: reqwest::Response) -> Result<Zeroizing<Vec<u8>>, String> {
    let too_large = || format!("response larger than {MAX_BODY_BYTES} bytes");
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(too_large());
    }
    let mut bytes = Zeroizing::new(Vec::new());
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if bytes.len() + chunk.len() > MAX_BODY_BYTES {
                    return Err(too_large());
                }
                bytes.extend_from_slice(&chunk);
            }
            Ok(None) => return Ok(bytes),
            Err(e) => return Err(format!("reading the response failed: {}", chain(&e))),
        }
    }
}

fn transport_detail(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        format!("no answer within {}s", TIMEOUT.as_secs())
    } else {
        chain(e)
    }
}

/// The error and its causes on one line; the URL is left out (the caller names the request).
fn chain(e: &reqwest::Error) -> String {
    let mut out = String::new();
    let mut next: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = next {
        let text = match err.downcast_ref::<reqwest::Error>() {
            Some(r) if r.url().is_some() => "request failed".to_owned(),
            _ => err.to_string(),
        };
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&text);
        next = err.source();
    }
    out
}

/// `text` with every occurrence of any of `secrets` replaced by `***`.
pub fn scrubbed(text: &str, secrets: &[&Secret]) -> String {
    let mut out = text.to_owned();
    for s in secrets {
        if !s.is_empty() && out.contains(s.expose()) {
            out = out.replace(s.expose(), "***");
        }
    }
    out
}

#[cfg(test)]
mod tests;
