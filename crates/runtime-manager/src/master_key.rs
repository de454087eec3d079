//! The master-key policy: production refuses to start without a strong `MASTER_KEY`.

/// The key development falls back to. Refused in production.
pub const DEV_MASTER_KEY: &str = "laneway-dev-master-key-not-for-production";
/// Shortest key production accepts, in bytes.
pub const MIN_MASTER_KEY_LEN: usize = 32;

/// Why the policy refused to start.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MasterKeyError {
    /// Production without a key.
    #[error(
        "MASTER_KEY: required when APP_ENV is production; set a random key of at least {MIN_MASTER_KEY_LEN} bytes"
    )]
    Missing,
    /// Production with a short key.
    #[error("MASTER_KEY: is {len} bytes; production needs at least {MIN_MASTER_KEY_LEN} bytes")]
    TooShort {
        /// Its length.
        len: usize,
    },
    /// Production with the development default.
    #[error("MASTER_KEY: is the development default; production needs its own key")]
    DevDefault,
}

/// What the policy decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MasterKeyStatus {
    /// A key was configured and is acceptable.
    Configured,
    /// Outside production with no key: the development default is used (a warning is logged).
    DevDefault,
}

fn is_production(getenv: &dyn Fn(&str) -> Option<String>) -> bool {
    let env =
        getenv("APP_ENV").filter(|v| !v.trim().is_empty()).or_else(|| getenv("ENV")).unwrap_or_default();
    matches!(env.trim().to_ascii_lowercase().as_str(), "prod" | "production")
}

/// Applies the policy of SPEC §3 to the environment `getenv` reads.
///
/// # Errors
/// In production: a missing, short (< 32 bytes) or development-default key.
pub fn validate_master_key_policy(
    getenv: &dyn Fn(&str) -> Option<String>,
) -> Result<MasterKeyStatus, MasterKeyError> {
    let key = getenv("MASTER_KEY").filter(|k| !k.is_empty());
    if is_production(getenv) {
        let key = key.ok_or(MasterKeyError::Missing)?;
        if key == DEV_MASTER_KEY {
            return Err(MasterKeyError::DevDefault);
        }
        if key.len() < MIN_MASTER_KEY_LEN {
            return Err(MasterKeyError::TooShort { len: key.len() });
        }
        return Ok(MasterKeyStatus::Configured);
    }
    if key.is_some() {
        Ok(MasterKeyStatus::Configured)
    } else {
        tracing::warn!(
            "MASTER_KEY is not set: using the development default (refused when APP_ENV=production)"
        );
        Ok(MasterKeyStatus::DevDefault)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        move |k| map.get(k).cloned()
    }

    #[test]
    fn production_without_a_key_refuses_to_start() {
        assert_eq!(
            validate_master_key_policy(&env(&[("APP_ENV", "production")])),
            Err(MasterKeyError::Missing)
        );
        assert_eq!(validate_master_key_policy(&env(&[("ENV", "prod")])), Err(MasterKeyError::Missing));
    }

    #[test]
    fn production_refuses_a_weak_or_default_key() {
        let short = env(&[("APP_ENV", "PROD"), ("MASTER_KEY", "short")]);
        assert_eq!(validate_master_key_policy(&short), Err(MasterKeyError::TooShort { len: 5 }));
        let dev = env(&[("APP_ENV", "prod"), ("MASTER_KEY", DEV_MASTER_KEY)]);
        assert_eq!(validate_master_key_policy(&dev), Err(MasterKeyError::DevDefault));
        assert!(MasterKeyError::TooShort { len: 5 }.to_string().starts_with("MASTER_KEY:"));
    }

    #[test]
    fn production_accepts_a_strong_key() {
        let ok = env(&[("APP_ENV", "production"), ("MASTER_KEY", &"k".repeat(32))]);
        assert_eq!(validate_master_key_policy(&ok), Ok(MasterKeyStatus::Configured));
    }

    #[test]
    fn development_allows_the_default_and_app_env_wins_over_env() {
        assert_eq!(validate_master_key_policy(&env(&[])), Ok(MasterKeyStatus::DevDefault));
        let dev = env(&[("APP_ENV", "development"), ("ENV", "production")]);
        assert_eq!(validate_master_key_policy(&dev), Ok(MasterKeyStatus::DevDefault));
        let short_in_dev = env(&[("MASTER_KEY", "short")]);
        assert_eq!(validate_master_key_policy(&short_in_dev), Ok(MasterKeyStatus::Configured));
    }
}
