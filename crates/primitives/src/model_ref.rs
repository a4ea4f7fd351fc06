use std::{fmt, str::FromStr};

use crate::{Error, ModelId, Result};

/// How a caller names a model: by name (latest version), `name@version`, or content id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ModelRef {
    /// The newest published version of this name.
    Latest(String),
    /// An exact version of this name.
    Version(String, semver::Version),
    /// Exact bytes.
    Id(ModelId),
}

/// Names are 1-64 chars of lowercase ASCII letters, digits, `-`, `_` and `.`, starting with a
/// letter or digit: safe in URLs, paths and shells, and unambiguous against `sha256:` ids.
pub fn validate_model_name(name: &str) -> Result<()> {
    let bad = |reason| Err(Error::InvalidModelName { name: name.to_owned(), reason });
    if name.is_empty() || name.len() > 64 {
        return bad("must be 1 to 64 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b)) {
        return bad("only lowercase letters, digits, '-', '_' and '.' are allowed");
    }
    if !name.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("must start with a letter or digit");
    }
    Ok(())
}

impl FromStr for ModelRef {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        if s.starts_with(ModelId::PREFIX) {
            return s.parse().map(ModelRef::Id);
        }
        match s.split_once('@') {
            Some((name, version)) => {
                validate_model_name(name)?;
                let v = semver::Version::parse(version)
                    .map_err(|e| Error::InvalidVersion { got: version.to_owned(), reason: e.to_string() })?;
                Ok(ModelRef::Version(name.to_owned(), v))
            }
            None => {
                validate_model_name(s)?;
                Ok(ModelRef::Latest(s.to_owned()))
            }
        }
    }
}

impl fmt::Display for ModelRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ModelRef::Latest(n) => f.write_str(n),
            ModelRef::Version(n, v) => write!(f, "{n}@{v}"),
            ModelRef::Id(id) => write!(f, "{id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_all_three_forms() {
        assert_eq!("digits".parse::<ModelRef>().unwrap(), ModelRef::Latest("digits".into()));
        assert_eq!(
            "digits@1.2.0".parse::<ModelRef>().unwrap(),
            ModelRef::Version("digits".into(), semver::Version::new(1, 2, 0))
        );
        let id = ModelId::of_bytes(b"m");
        assert_eq!(id.to_string().parse::<ModelRef>().unwrap(), ModelRef::Id(id));
    }

    #[test]
    fn rejects_bad_names_and_versions() {
        for bad in ["", "Digits", "a b", "-x", "x/y", "d@1", "d@", "sha256:12", &"a".repeat(65), "../etc"] {
            assert!(bad.parse::<ModelRef>().is_err(), "accepted {bad:?}");
        }
    }
}
