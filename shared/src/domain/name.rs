//! The one rule for the names people give tenants and tokens.

use super::ValidationError;

/// A tenant's or a token's name: trimmed, then 1 to [`Name::MAX_CHARS`] characters (characters,
/// not bytes: a name in any script gets the same room).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Name(String);

impl Name {
    pub const MAX_CHARS: usize = 100;

    /// `raw` as a name; else the error names `field`.
    pub fn parse(field: &str, raw: &str) -> Result<Self, ValidationError> {
        let name = raw.trim();
        if name.is_empty() || name.chars().count() > Self::MAX_CHARS {
            return Err(ValidationError::new(
                field,
                format!("must be 1 to {} characters", Self::MAX_CHARS),
            ));
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Name {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_trimmed_and_counted_in_characters() {
        assert_eq!(
            Name::parse("name", "  acme ").expect("a name").as_str(),
            "acme"
        );
        assert!(Name::parse("name", "   ").is_err());
        // 100 characters of three bytes each: too long in bytes, right in characters.
        assert!(Name::parse("name", &"é".repeat(100)).is_ok());
        let error = Name::parse("name", &"é".repeat(101)).expect_err("too long");
        assert_eq!(error.field, "name");
        assert_eq!(error.message, "must be 1 to 100 characters");
    }
}
