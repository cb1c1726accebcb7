//! Obtaining a Vault token: the configured auth method, its login request (AppRole,
//! Kubernetes) or, for a given token, the lookup that learns its TTL.

use std::path::{Path, PathBuf};
use std::time::Instant;

use reqwest::Method;
use serde_json::json;
use tokio::io::AsyncReadExt;
use zeroize::Zeroizing;

use super::client::{CallError, VaultClient, parsed};
use super::response::{TokenGrant, auth_grant, token_lookup};
use crate::config::VaultAuth;
use crate::credentials::SourceError;
use crate::credentials::audit;
use crate::secret::Secret;

/// A service-account JWT is about a kilobyte, a Vault token far less; refuse to read
/// something that clearly is neither.
const MAX_JWT_BYTES: u64 = 64 * 1024;

/// How pglease obtains its token (the `auth` table, with secrets resolved).
pub enum AuthMethod {
    /// A token given in the config. Read from a file, it is replaced by reading the file
    /// again (Vault Agent's sink rewrites it); given any other way, it cannot be replaced.
    Token {
        /// The token as read at load.
        token: Secret,
        /// The file it came from, if any.
        file: Option<PathBuf>,
    },
    /// `POST auth/{mount}/login` with `role_id` and `secret_id`.
    AppRole {
        /// Where the AppRole method is mounted, without slashes around it.
        mount: String,
        /// The role's `role_id`.
        role_id: Secret,
        /// The role's `secret_id`.
        secret_id: Secret,
    },
    /// `POST auth/{mount}/login` with `role` and the service-account JWT read from `jwt_path`.
    Kubernetes {
        /// Where the Kubernetes method is mounted, without slashes around it.
        mount: String,
        /// The Vault role bound to the service account.
        role: String,
        /// Read afresh at every login: Kubernetes rotates projected tokens.
        jwt_path: PathBuf,
    },
}

impl AuthMethod {
    /// The method from the config; mounts lose surrounding slashes.
    pub fn from_config(auth: &VaultAuth) -> AuthMethod {
        match auth {
            VaultAuth::Token { token, token_file } => AuthMethod::Token {
                token: token.clone(),
                file: token_file.clone(),
            },
            VaultAuth::AppRole {
                role_id,
                secret_id,
                mount,
            } => AuthMethod::AppRole {
                mount: mount.trim_matches('/').to_owned(),
                role_id: role_id.clone(),
                secret_id: secret_id.clone(),
            },
            VaultAuth::Kubernetes {
                role,
                jwt_path,
                mount,
            } => AuthMethod::Kubernetes {
                mount: mount.trim_matches('/').to_owned(),
                role: role.clone(),
                jwt_path: jwt_path.clone(),
            },
        }
    }

    /// The `method` value, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            AuthMethod::Token { .. } => "token",
            AuthMethod::AppRole { .. } => "approle",
            AuthMethod::Kubernetes { .. } => "kubernetes",
        }
    }
}

/// A token just obtained: the token, its lease, and when its TTL started counting.
pub struct Obtained {
    /// The token itself.
    pub token: Secret,
    /// Its TTL, renewability and accessor.
    pub grant: TokenGrant,
    /// When the request that granted it was sent: its TTL counts from no later than this.
    pub since: Instant,
}

/// Logs in with `method`. A token from a file is read again and looked up; any other given
/// token cannot log in.
pub async fn login(client: &VaultClient, method: &AuthMethod) -> Result<Obtained, SourceError> {
    let (mount, body, jwt) = match method {
        AuthMethod::Token {
            file: Some(path), ..
        } => {
            let token = read_secret_file(path, "vault token file").await?;
            return lookup_self(client, &token).await;
        }
        AuthMethod::Token { file: None, .. } => {
            return Err(SourceError::Unsupported("log in again with a given token"));
        }
        AuthMethod::AppRole {
            mount,
            role_id,
            secret_id,
        } => {
            let body = json!({"role_id": role_id.expose(), "secret_id": secret_id.expose()});
            (mount, body, None)
        }
        AuthMethod::Kubernetes {
            mount,
            role,
            jwt_path,
        } => {
            let jwt = read_secret_file(jwt_path, "kubernetes jwt_path").await?;
            let body = json!({"role": role, "jwt": jwt.expose()});
            (mount, body, Some(jwt))
        }
    };
    let mut scrub: Vec<&Secret> = jwt.iter().collect();
    if let AuthMethod::AppRole {
        role_id, secret_id, ..
    } = method
    {
        scrub.extend([role_id, secret_id]);
    }
    let path = format!("auth/{mount}/login");
    let since = Instant::now();
    let reply = client
        .call(Method::POST, &path, Some(body), None, &scrub)
        .await?;
    let mut grant = parsed(&Method::POST, &path, reply, auth_grant)?;
    let Some(token) = grant.token.take() else {
        return Err(CallError::malformed(&Method::POST, &path, "no `auth.client_token`").into());
    };
    audit::record!(
        INFO,
        event = "vault_login",
        method = method.name(),
        accessor = grant.accessor.as_deref().unwrap_or(""),
        ttl_secs = grant.ttl,
        renewable = grant.renewable,
        "logged in to vault"
    );
    Ok(Obtained {
        token,
        grant,
        since,
    })
}

/// Learns the TTL and renewability of a given token; a refused token fails here, at the first
/// request, with Vault's own message.
pub async fn lookup_self(client: &VaultClient, token: &Secret) -> Result<Obtained, SourceError> {
    let path = "auth/token/lookup-self";
    let since = Instant::now();
    let reply = client
        .call(Method::GET, path, None, Some(token), &[])
        .await?;
    let grant = parsed(&Method::GET, path, reply, token_lookup)?;
    audit::record!(
        INFO,
        event = "vault_token_checked",
        method = "token",
        accessor = grant.accessor.as_deref().unwrap_or(""),
        ttl_secs = grant.ttl,
        renewable = grant.renewable,
        "vault token accepted"
    );
    Ok(Obtained {
        token: token.clone(),
        grant,
        since,
    })
}

/// Reads a credential file afresh (a service-account JWT, which Kubernetes rotates, or a
/// token Vault Agent rewrites); `what` names it in errors.
async fn read_secret_file(path: &Path, what: &str) -> Result<Secret, SourceError> {
    let fail =
        |detail: String| SourceError::Unreachable(format!("{what} {}: {detail}", path.display()));
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| fail(e.to_string()))?;
    let mut bytes = Zeroizing::new(Vec::new());
    file.take(MAX_JWT_BYTES + 1)
        .read_to_end(&mut bytes)
        .await
        .map_err(|e| fail(e.to_string()))?;
    if bytes.len() as u64 > MAX_JWT_BYTES {
        return Err(fail(format!("larger than {MAX_JWT_BYTES} bytes")));
    }
    let text = std::str::from_utf8(&bytes).map_err(|_| fail("not UTF-8 text".into()))?;
    let jwt = text.trim();
    if jwt.is_empty() {
        return Err(fail("empty".into()));
    }
    Ok(Secret::new(jwt.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jwt_is_trimmed_and_bounded() {
        let dir = std::env::temp_dir().join(format!("pglease-jwt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token");
        std::fs::write(&path, "eyJhbGciOi.payload.sig\n").unwrap();
        assert_eq!(
            read_secret_file(&path, "jwt").await.unwrap().expose(),
            "eyJhbGciOi.payload.sig"
        );
        std::fs::write(&path, " \n").unwrap();
        let err = read_secret_file(&path, "jwt")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("empty"), "{err}");
        std::fs::write(&path, vec![b'a'; MAX_JWT_BYTES as usize + 1]).unwrap();
        let err = read_secret_file(&path, "jwt")
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("larger"), "{err}");
        let missing = read_secret_file(&dir.join("missing"), "jwt")
            .await
            .unwrap_err();
        assert!(matches!(missing, SourceError::Unreachable(_)));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mounts_lose_their_slashes() {
        let auth = VaultAuth::AppRole {
            role_id: "r".into(),
            secret_id: "s".into(),
            mount: "/team/approle/".into(),
        };
        match AuthMethod::from_config(&auth) {
            AuthMethod::AppRole { mount, .. } => assert_eq!(mount, "team/approle"),
            _ => panic!("wrong method"),
        }
        let token = VaultAuth::Token {
            token: "t".into(),
            token_file: None,
        };
        assert_eq!(AuthMethod::from_config(&token).name(), "token");
    }
}
