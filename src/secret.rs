//! The one type every password, token and key travels in, so none can reach a log by accident.

use std::fmt;

use zeroize::Zeroizing;

/// A secret string (password, SCRAM verifier, token).
///
/// `Debug` and `Display` print `***`, so a secret inside any struct that derives `Debug`
/// is redacted without anyone having to remember it. The bytes are zeroized on drop.
/// The only way to read the value is [`Secret::expose`], which makes every use greppable.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<String>);

impl Secret {
    /// Wraps a value; the `String` is moved, so no unredacted copy is left behind.
    pub fn new(value: String) -> Self {
        Secret(Zeroizing::new(value))
    }

    /// The secret value. Call only where the value must go on the wire or into a hash.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the secret is the empty string (a config mistake worth reporting).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret::new(value.to_owned())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_redact() {
        let s = Secret::from("hunter2");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(s.expose(), "hunter2");
    }
}
