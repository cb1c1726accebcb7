//! The shapes of Vault's JSON answers that pglease reads, checked field by field.
//!
//! Every answer is the same envelope (`request_id`, `lease_id`, `lease_duration`, `renewable`,
//! `data`, `auth`, `warnings`); endpoints differ in which parts they fill. Fields are read by
//! hand rather than with serde derives because serde's messages can quote the offending value,
//! and here values include passwords and tokens: an error names the field and what it should
//! be, nothing else. Secret strings are moved out of the parsed tree into [`Secret`]s, so no
//! second copy is left behind.

use serde_json::{Map, Value};

use crate::secret::Secret;

/// Credentials of a dynamic role (`GET {mount}/creds/{role}`).
#[derive(Debug)]
pub struct DynamicCreds {
    /// Vault's lease id, used to renew and revoke; not secret.
    pub lease_id: String,
    /// Seconds the credentials live from the moment they were issued; 0 means no expiry.
    pub lease_duration: u64,
    /// Whether `sys/leases/renew` may extend them.
    pub renewable: bool,
    /// The PostgreSQL role Vault created.
    pub username: String,
    /// Its password.
    pub password: Secret,
}

/// Credentials of a static role (`GET {mount}/static-creds/{role}`).
#[derive(Debug)]
pub struct StaticCreds {
    /// The existing PostgreSQL role whose password Vault manages.
    pub username: String,
    /// Its current password.
    pub password: Secret,
    /// Seconds until Vault's next scheduled rotation.
    pub ttl: u64,
    /// When Vault last rotated the password (RFC 3339, kept as text: it only identifies the
    /// rotation).
    pub last_vault_rotation: Option<String>,
}

/// A Vault token and its lease, from a login, a renewal or a lookup.
#[derive(Debug)]
pub struct TokenGrant {
    /// The token itself; `None` from a lookup, which does not repeat it (a login without one
    /// is refused by the caller).
    pub token: Option<Secret>,
    /// The token's accessor: names the token in logs without granting anything.
    pub accessor: Option<String>,
    /// Seconds the token lives from now; 0 means it never expires (a root token).
    pub ttl: u64,
    /// The TTL it had when created, when Vault says (lookup only).
    pub creation_ttl: Option<u64>,
    /// Whether `renew-self` may extend it.
    pub renewable: bool,
}

/// Reads a dynamic-role answer.
pub fn dynamic_creds(body: Value) -> Result<DynamicCreds, String> {
    let mut top = object(body, "response")?;
    let lease_id = string(&mut top, "", "lease_id")?;
    if lease_id.is_empty() {
        return Err("response has an empty `lease_id`".into());
    }
    let lease_duration = seconds(&top, "", "lease_duration")?;
    let renewable = flag(&top, "", "renewable")?;
    let mut data = object(take(&mut top, "", "data")?, "data")?;
    Ok(DynamicCreds {
        lease_id,
        lease_duration,
        renewable,
        username: non_empty(string(&mut data, "data.", "username")?, "data.username")?,
        password: secret(&mut data, "data.", "password")?,
    })
}

/// Reads a static-role answer.
pub fn static_creds(body: Value) -> Result<StaticCreds, String> {
    let mut top = object(body, "response")?;
    let mut data = object(take(&mut top, "", "data")?, "data")?;
    let last_vault_rotation = match data.remove("last_vault_rotation") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err("`data.last_vault_rotation` must be a string".into()),
    };
    Ok(StaticCreds {
        username: non_empty(string(&mut data, "data.", "username")?, "data.username")?,
        password: secret(&mut data, "data.", "password")?,
        ttl: seconds(&data, "data.", "ttl")?,
        last_vault_rotation,
    })
}

/// Reads the answer to `sys/leases/renew`: the seconds Vault granted.
pub fn lease_renewal(body: Value) -> Result<u64, String> {
    let top = object(body, "response")?;
    seconds(&top, "", "lease_duration")
}

/// Reads the `auth` block of a login or `renew-self` answer.
pub fn auth_grant(body: Value) -> Result<TokenGrant, String> {
    let mut top = object(body, "response")?;
    let mut auth = object(take(&mut top, "", "auth")?, "auth")?;
    Ok(TokenGrant {
        token: optional_string(&mut auth, "auth.", "client_token")?.map(Secret::new),
        accessor: optional_string(&mut auth, "auth.", "accessor")?,
        ttl: seconds(&auth, "auth.", "lease_duration")?,
        creation_ttl: None,
        renewable: flag(&auth, "auth.", "renewable")?,
    })
}

/// Reads the `data` block of `auth/token/lookup-self`.
pub fn token_lookup(body: Value) -> Result<TokenGrant, String> {
    let mut top = object(body, "response")?;
    let mut data = object(take(&mut top, "", "data")?, "data")?;
    let creation_ttl = match data.get("creation_ttl") {
        None | Some(Value::Null) => None,
        Some(_) => Some(seconds(&data, "data.", "creation_ttl")?),
    };
    Ok(TokenGrant {
        token: None,
        accessor: optional_string(&mut data, "data.", "accessor")?,
        ttl: seconds(&data, "data.", "ttl")?,
        creation_ttl,
        renewable: flag(&data, "data.", "renewable")?,
    })
}

/// Vault's `{"errors": [...]}`: its messages, at most `max` of them, each cut to 200 chars.
/// Anything else in an error body is ignored: it could hold data.
pub fn error_messages(body: &[u8], max: usize) -> Vec<String> {
    let Ok(Value::Object(mut top)) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    let Some(Value::Array(errors)) = top.remove("errors") else {
        return Vec::new();
    };
    errors
        .into_iter()
        .filter_map(|e| match e {
            Value::String(s) if !s.is_empty() => Some(s.chars().take(200).collect()),
            _ => None,
        })
        .take(max)
        .collect()
}

fn object(value: Value, what: &str) -> Result<Map<String, Value>, String> {
    match value {
        Value::Object(map) => Ok(map),
        _ => Err(format!("`{what}` is not a JSON object")),
    }
}

fn take(map: &mut Map<String, Value>, prefix: &str, key: &str) -> Result<Value, String> {
    match map.remove(key) {
        None | Some(Value::Null) => Err(format!("response has no `{prefix}{key}`")),
        Some(v) => Ok(v),
    }
}

fn string(map: &mut Map<String, Value>, prefix: &str, key: &str) -> Result<String, String> {
    match take(map, prefix, key)? {
        Value::String(s) => Ok(s),
        _ => Err(format!("`{prefix}{key}` must be a string")),
    }
}

fn optional_string(
    map: &mut Map<String, Value>,
    prefix: &str,
    key: &str,
) -> Result<Option<String>, String> {
    match map.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("`{prefix}{key}` must be a string")),
    }
}

fn secret(map: &mut Map<String, Value>, prefix: &str, key: &str) -> Result<Secret, String> {
    let value = string(map, prefix, key)?;
    if value.is_empty() {
        return Err(format!("`{prefix}{key}` is empty"));
    }
    Ok(Secret::new(value))
}

fn non_empty(value: String, what: &str) -> Result<String, String> {
    if value.is_empty() {
        Err(format!("`{what}` is empty"))
    } else {
        Ok(value)
    }
}

/// A non-negative whole number of seconds. Vault writes integers; a float with no fraction is
/// accepted too, as some proxies re-encode JSON numbers.
fn seconds(map: &Map<String, Value>, prefix: &str, key: &str) -> Result<u64, String> {
    let wrong = || format!("`{prefix}{key}` must be a non-negative number of seconds");
    match map.get(key) {
        None | Some(Value::Null) => Err(format!("response has no `{prefix}{key}`")),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f < u64::MAX as f64)
                    .map(|f| f as u64)
            })
            .ok_or_else(wrong),
        Some(_) => Err(wrong()),
    }
}

fn flag(map: &Map<String, Value>, prefix: &str, key: &str) -> Result<bool, String> {
    match map.get(key) {
        None | Some(Value::Null) => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(format!("`{prefix}{key}` must be true or false")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn creds_body() -> Value {
        json!({
            "request_id": "6cc7a484-921a-a730-179c-eec3f1df4e84",
            "lease_id": "database/creds/app/2f6a614c-4aa2-7b19-24b9-ad944a8d4de6",
            "lease_duration": 3600,
            "renewable": true,
            "data": {"username": "v-token-app-x1", "password": "A1a-secret-pw"},
            "warnings": null,
            "auth": null
        })
    }

    #[test]
    fn dynamic_creds_are_read_from_the_documented_shape() {
        let creds = dynamic_creds(creds_body()).unwrap();
        assert_eq!(
            creds.lease_id,
            "database/creds/app/2f6a614c-4aa2-7b19-24b9-ad944a8d4de6"
        );
        assert_eq!((creds.lease_duration, creds.renewable), (3600, true));
        assert_eq!(creds.username, "v-token-app-x1");
        assert_eq!(creds.password.expose(), "A1a-secret-pw");
    }

    #[test]
    fn missing_or_mistyped_fields_are_named_and_never_quoted() {
        let mut body = creds_body();
        body["data"]["password"] = json!(12345);
        let err = dynamic_creds(body).unwrap_err();
        assert_eq!(err, "`data.password` must be a string");

        let mut body = creds_body();
        body["data"].as_object_mut().unwrap().remove("username");
        assert_eq!(
            dynamic_creds(body).unwrap_err(),
            "response has no `data.username`"
        );

        let mut body = creds_body();
        body["lease_duration"] = json!("3600s-A1a-secret-pw");
        let err = dynamic_creds(body).unwrap_err();
        assert!(
            err.contains("lease_duration") && !err.contains("secret"),
            "{err}"
        );

        let mut body = creds_body();
        body["lease_id"] = json!("");
        assert!(dynamic_creds(body).unwrap_err().contains("lease_id"));

        assert_eq!(
            dynamic_creds(json!(["A1a-secret-pw"])).unwrap_err(),
            "`response` is not a JSON object"
        );
    }

    #[test]
    fn static_creds_keep_rotation_and_ttl() {
        let body = json!({
            "data": {
                "username": "static-user",
                "password": "132ae3ef-5a64",
                "last_vault_rotation": "2019-05-06T15:26:42.525302-05:00",
                "rotation_period": 30,
                "ttl": 28
            }
        });
        let creds = static_creds(body).unwrap();
        assert_eq!(creds.username, "static-user");
        assert_eq!(creds.password.expose(), "132ae3ef-5a64");
        assert_eq!(creds.ttl, 28);
        assert_eq!(
            creds.last_vault_rotation.as_deref(),
            Some("2019-05-06T15:26:42.525302-05:00")
        );
        let no_ttl = json!({"data": {"username": "u", "password": "p"}});
        assert_eq!(
            static_creds(no_ttl).unwrap_err(),
            "response has no `data.ttl`"
        );
        let negative = json!({"data": {"username": "u", "password": "p", "ttl": -1}});
        assert!(static_creds(negative).is_err());
    }

    #[test]
    fn auth_and_lookup_blocks() {
        let login = json!({
            "auth": {
                "client_token": "hvs.CAESIBBB",
                "accessor": "0e9e354a-520f-df04-6867-ee81cae3d42d",
                "policies": ["default"],
                "lease_duration": 2764800,
                "renewable": true
            }
        });
        let grant = auth_grant(login).unwrap();
        assert_eq!(grant.token.unwrap().expose(), "hvs.CAESIBBB");
        assert_eq!(
            grant.accessor.as_deref(),
            Some("0e9e354a-520f-df04-6867-ee81cae3d42d")
        );
        assert_eq!((grant.ttl, grant.renewable), (2764800, true));
        assert_eq!(
            auth_grant(json!({"auth": null})).unwrap_err(),
            "response has no `auth`"
        );
        let no_token = json!({"auth": {"lease_duration": 5, "renewable": true}});
        assert!(auth_grant(no_token).unwrap().token.is_none());
        let bad_token = json!({"auth": {"client_token": 7, "lease_duration": 5}});
        assert_eq!(
            auth_grant(bad_token).unwrap_err(),
            "`auth.client_token` must be a string"
        );

        let lookup =
            json!({"data": {"accessor": "acc", "creation_ttl": 60, "ttl": 41, "renewable": false}});
        let grant = token_lookup(lookup).unwrap();
        assert!(grant.token.is_none());
        assert_eq!(
            (grant.ttl, grant.creation_ttl, grant.renewable),
            (41, Some(60), false)
        );
        let root = json!({"data": {"ttl": 0, "creation_ttl": 0, "renewable": false}});
        assert_eq!(token_lookup(root).unwrap().ttl, 0);
    }

    #[test]
    fn renewal_reads_the_granted_duration() {
        let body =
            json!({"lease_id": "database/creds/app/x", "renewable": true, "lease_duration": 42});
        assert_eq!(lease_renewal(body).unwrap(), 42);
        assert_eq!(lease_renewal(json!({"lease_duration": 42.0})).unwrap(), 42);
        assert!(lease_renewal(json!({"lease_duration": 4.5})).is_err());
    }

    #[test]
    fn error_messages_come_only_from_the_errors_array() {
        let body = br#"{"errors":["permission denied","","second"],"data":{"password":"x"}}"#;
        assert_eq!(error_messages(body, 5), ["permission denied", "second"]);
        assert_eq!(error_messages(body, 1), ["permission denied"]);
        assert!(error_messages(b"<html>502 Bad Gateway</html>", 5).is_empty());
        let long = format!(r#"{{"errors":["{}"]}}"#, "e".repeat(500));
        assert_eq!(error_messages(long.as_bytes(), 5)[0].len(), 200);
    }
}
