//! Object keys: validated once, so no backend ever sees an empty, absolute or `..` path.

use std::fmt;

/// A validated object key: relative, no empty or `..` segments, no control characters.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Key(String);

impl Key {
    /// Validates a key.
    ///
    /// # Errors
    /// A sentence describing why the key is not acceptable.
    pub fn new(key: impl Into<String>) -> Result<Self, String> {
        let key = key.into();
        if key.is_empty() || key.len() > 1024 {
            return Err(format!("object key must be 1-1024 bytes, got {} bytes", key.len()));
        }
        if key.starts_with('/') || key.ends_with('/') {
            return Err(format!("object key {key:?} must not start or end with '/'"));
        }
        if key.split('/').any(|s| s.is_empty() || s == "." || s == "..") {
            return Err(format!("object key {key:?} has an empty, '.' or '..' segment"));
        }
        if key.chars().any(|c| c.is_control() || c == '\\') {
            return Err(format!("object key {key:?} contains a control character or backslash"));
        }
        Ok(Self(key))
    }

    /// The key as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The last path segment.
    pub fn file_name(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or(&self.0)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_validated() {
        for bad in ["", "/a", "a/", "a//b", "a/../b", "a/./b", "a\nb", "a\\b"] {
            assert!(Key::new(bad).is_err(), "{bad:?}");
        }
        assert_eq!(Key::new("a/b/c.json").unwrap().file_name(), "c.json");
    }
}
