//! Secret indirection in the config: a value is a literal, `"env:NAME"` or `"file:/path"`.
//!
//! Indirection lets the config file itself be non-secret (checked in, printed by `SHOW
//! CONFIG`), with the secrets coming from the environment or from mounted files. Errors name
//! the variable or the path, never the value, so they are safe to print.
//!
//! A secret file that users other than its owner may read (or write) is still used, since
//! refusing it would take a working deployment down, but each read logs a warning naming
//! the path and the mode ([`warn_if_exposed`]); the credential `file` source does the same.

use std::env::VarError;
use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tracing::warn;

use crate::secret::Secret;

/// The largest secret file read. Secrets are short; a bigger file is almost certainly the wrong
/// path, and reading it whole would be an unbounded allocation.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// Why a secret reference could not be resolved. No variant holds the secret value.
#[derive(Debug, thiserror::Error)]
pub enum SecretRefError {
    /// `env:` with nothing after it.
    #[error("`env:` needs a variable name, e.g. \"env:PGLEASE_PASSWORD\"")]
    EmptyEnvName,
    /// The named variable is not set.
    #[error("environment variable `{0}` is not set")]
    EnvMissing(String),
    /// The named variable is set but not valid UTF-8.
    #[error("environment variable `{0}` is not valid UTF-8")]
    EnvNotUnicode(String),
    /// `file:` with nothing after it.
    #[error("`file:` needs a path, e.g. \"file:/run/secrets/password\"")]
    EmptyPath,
    /// The file could not be opened or read.
    #[error("cannot read secret file `{}`: {source}", path.display())]
    FileRead {
        /// The path as resolved against the config's directory.
        path: PathBuf,
        /// Why the read failed.
        #[source]
        source: io::Error,
    },
    /// The file is larger than [`MAX_SECRET_FILE_BYTES`].
    #[error("secret file `{}` is larger than {MAX_SECRET_FILE_BYTES} bytes", path.display())]
    FileTooLarge {
        /// The path as resolved against the config's directory.
        path: PathBuf,
    },
    /// The file's contents are not UTF-8.
    #[error("secret file `{}` is not valid UTF-8", path.display())]
    FileNotUnicode {
        /// The path as resolved against the config's directory.
        path: PathBuf,
    },
}

/// How `env:` references are looked up: [`std::env::var`] in production, a map in tests (the
/// crate forbids `unsafe`, so tests cannot set process variables, and should not: they run in
/// parallel).
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Result<String, VarError>;

/// Turns a config value into the secret it stands for.
///
/// `"env:NAME"` reads the variable through `env`; `"file:PATH"` reads the file, relative paths
/// being taken from `base_dir` (the config file's directory) so that the result does not depend
/// on the working directory. One trailing line ending is removed from a file, because editors
/// and `echo` add one that is never part of the password. Anything else is the literal secret.
pub fn resolve_secret(
    raw: String,
    base_dir: &Path,
    env: EnvLookup<'_>,
) -> Result<Secret, SecretRefError> {
    if let Some(name) = raw.strip_prefix("env:") {
        if name.is_empty() {
            return Err(SecretRefError::EmptyEnvName);
        }
        return match env(name) {
            Ok(value) => Ok(Secret::new(value)),
            Err(VarError::NotPresent) => Err(SecretRefError::EnvMissing(name.to_owned())),
            Err(VarError::NotUnicode(_)) => Err(SecretRefError::EnvNotUnicode(name.to_owned())),
        };
    }
    if let Some(path) = raw.strip_prefix("file:") {
        if path.is_empty() {
            return Err(SecretRefError::EmptyPath);
        }
        return read_secret_file(&base_dir.join(path));
    }
    Ok(Secret::new(raw))
}

/// The permission bits of a file holding a secret when they let anyone but its owner (group
/// or others) at it, `None` when only the owner may read it. A Kubernetes secret volume's
/// default (0644) is exposed: every process in the pod, whatever its user, can read it.
pub fn exposed_mode(metadata: &Metadata) -> Option<u32> {
    let mode = metadata.permissions().mode() & 0o7777;
    (mode & 0o077 != 0).then_some(mode)
}

/// Warns, naming `path` and its mode (never its content), when [`exposed_mode`] says the
/// secret file is readable by other users.
pub fn warn_if_exposed(path: &Path, metadata: &Metadata) {
    if let Some(mode) = exposed_mode(metadata) {
        warn!(
            path = %path.display(),
            mode = %format_args!("{mode:04o}"),
            "secret file is accessible to users other than its owner; make it 0600 or 0400"
        );
    }
}

fn read_secret_file(path: &Path) -> Result<Secret, SecretRefError> {
    let read_error = |source| SecretRefError::FileRead {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    if let Ok(metadata) = file.metadata() {
        warn_if_exposed(path, &metadata);
    }
    // Read one byte past the limit rather than trusting metadata, which can change (or lie, for
    // a pipe) between the check and the read.
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        zeroize::Zeroize::zeroize(&mut bytes);
        return Err(SecretRefError::FileTooLarge {
            path: path.to_owned(),
        });
    }
    let mut text = match String::from_utf8(bytes) {
        Ok(text) => text,
        Err(error) => {
            zeroize::Zeroize::zeroize(&mut error.into_bytes());
            return Err(SecretRefError::FileNotUnicode {
                path: path.to_owned(),
            });
        }
    };
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    Ok(Secret::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Result<String, VarError> {
        Err(VarError::NotPresent)
    }

    fn resolve(raw: &str, base_dir: &Path) -> Result<Secret, SecretRefError> {
        resolve_secret(raw.to_owned(), base_dir, &no_env)
    }

    fn temp_file(name: &str, contents: &[u8]) -> PathBuf {
        let path =
            std::env::temp_dir().join(format!("pglease-secret-ref-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        path
    }

    #[test]
    fn literal_is_kept_as_is() {
        let secret = resolve("SCRAM-SHA-256$4096:abc", Path::new("/")).unwrap();
        assert_eq!(secret.expose(), "SCRAM-SHA-256$4096:abc");
    }

    #[test]
    fn env_reference_reads_the_variable() {
        let env = |name: &str| match name {
            "PGLEASE_TEST_SECRET_REF_ENV_OK" => Ok("from-env".to_owned()),
            _ => Err(VarError::NotPresent),
        };
        let secret = resolve_secret(
            "env:PGLEASE_TEST_SECRET_REF_ENV_OK".into(),
            Path::new("/"),
            &env,
        )
        .unwrap();
        assert_eq!(secret.expose(), "from-env");
    }

    #[test]
    fn env_reference_works_with_the_process_environment() {
        let real = |name: &str| std::env::var(name);
        if let Ok(expected) = std::env::var("PATH") {
            let secret = resolve_secret("env:PATH".into(), Path::new("/"), &real).unwrap();
            assert_eq!(secret.expose(), expected);
        }
    }

    #[test]
    fn missing_env_names_the_variable() {
        let error = resolve("env:PGLEASE_TEST_SURELY_UNSET_42", Path::new("/")).unwrap_err();
        assert!(matches!(error, SecretRefError::EnvMissing(_)));
        assert!(error.to_string().contains("PGLEASE_TEST_SURELY_UNSET_42"));
        assert!(matches!(
            resolve("env:", Path::new("/")),
            Err(SecretRefError::EmptyEnvName)
        ));
    }

    #[test]
    fn file_reference_strips_one_line_ending() {
        let path = temp_file("crlf", b"s3cret \r\n");
        let secret = resolve(&format!("file:{}", path.display()), Path::new("/")).unwrap();
        assert_eq!(secret.expose(), "s3cret ");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn relative_file_is_taken_from_base_dir() {
        let path = temp_file("relative", b"rel\n");
        let file_name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let secret = resolve(&format!("file:{file_name}"), &std::env::temp_dir()).unwrap();
        assert_eq!(secret.expose(), "rel");
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn files_others_may_read_are_told_apart_from_private_ones() {
        let path = temp_file("mode", b"s3cret\n");
        let mode_of = |mode: u32| {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            exposed_mode(&std::fs::metadata(&path).unwrap())
        };
        assert_eq!(mode_of(0o644), Some(0o644));
        assert_eq!(mode_of(0o640), Some(0o640));
        assert_eq!(mode_of(0o604), Some(0o604));
        assert_eq!(mode_of(0o620), Some(0o620));
        assert_eq!(mode_of(0o600), None);
        assert_eq!(mode_of(0o400), None);
        std::fs::remove_file(path).unwrap();
    }

    #[test]
    fn file_errors_name_the_path_but_not_the_contents() {
        let missing = resolve("file:no-such-secret", Path::new("/nowhere"))
            .unwrap_err()
            .to_string();
        assert!(missing.contains("/nowhere/no-such-secret"), "{missing}");

        let big = vec![b'x'; MAX_SECRET_FILE_BYTES as usize + 1];
        let path = temp_file("big", &big);
        let error = resolve(&format!("file:{}", path.display()), Path::new("/"));
        assert!(matches!(error, Err(SecretRefError::FileTooLarge { .. })));
        std::fs::remove_file(path).unwrap();

        let path = temp_file("binary", b"hunter2\xff");
        let text = resolve(&format!("file:{}", path.display()), Path::new("/"))
            .unwrap_err()
            .to_string();
        assert!(
            text.contains("UTF-8") && !text.contains("hunter2"),
            "{text}"
        );
        std::fs::remove_file(path).unwrap();
    }
}
