//! Validated identifiers. Every id that reaches a store, a key or a file name went through here.
//!
//! Ids are never rewritten: a bad id is refused with an error naming the field and the rule, so a
//! tenant or lane id can never smuggle a Redis hash tag (`{`), a glob (`*`, `?`, `[`) or a path
//! separator into a key or a file name.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why an id was refused: the field it was meant for and the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {rule}")]
pub struct IdError {
    /// The field the value was given for (`tenant_id`, `lane_id`, ...).
    pub field: &'static str,
    /// The rule it broke, in words a user can act on.
    pub rule: String,
}

/// Longest job, lane or request id, in bytes.
pub const MAX_ID_LEN: usize = 200;
/// Longest tenant id, in bytes.
pub const MAX_TENANT_LEN: usize = 64;

const ID_RULE: &str = "must be 1-200 bytes of [A-Za-z0-9_.:@-]";
const TENANT_RULE: &str = "must match [A-Za-z0-9][A-Za-z0-9_-]{0,63}";

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'-')
}

fn describe(value: &str, max: usize, rule: &str) -> String {
    if value.is_empty() {
        return format!("is empty; {rule}");
    }
    if value.len() > max {
        return format!("is {} bytes long; {rule}", value.len());
    }
    let bad = value
        .chars()
        .find(|c| !c.is_ascii() || !is_id_byte(*c as u8))
        .map_or_else(String::new, |c| format!("{c:?}"));
    format!("contains the forbidden character {bad}; {rule}")
}

fn check_id(field: &'static str, value: &str) -> Result<(), IdError> {
    if !value.is_empty() && value.len() <= MAX_ID_LEN && value.bytes().all(is_id_byte) {
        Ok(())
    } else {
        Err(IdError { field, rule: describe(value, MAX_ID_LEN, ID_RULE) })
    }
}

fn check_tenant(field: &'static str, value: &str) -> Result<(), IdError> {
    let bytes = value.as_bytes();
    let ok = !bytes.is_empty()
        && bytes.len() <= MAX_TENANT_LEN
        && bytes[0].is_ascii_alphanumeric()
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'));
    if ok {
        return Ok(());
    }
    let rule = if bytes.first().is_some_and(|b| !b.is_ascii_alphanumeric())
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
    {
        format!("must start with a letter or digit; {TENANT_RULE}")
    } else {
        let bad = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
            .map_or_else(String::new, |c| format!("{c:?}"));
        if value.is_empty() {
            format!("is empty; {TENANT_RULE}")
        } else if value.len() > MAX_TENANT_LEN {
            format!("is {} bytes long; {TENANT_RULE}", value.len())
        } else {
            format!("contains the forbidden character {bad}; {TENANT_RULE}")
        }
    };
    Err(IdError { field, rule })
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $field:literal, $check:ident) => {
        $(#[$doc])*
        ///
        /// The text is shared, not copied, between clones: a job id is held by its record, the
        /// indexes and the queues of a backlog at once.
        #[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub struct $name(Arc<str>);

        impl $name {
            /// The field name used in errors about this id.
            pub const FIELD: &'static str = $field;

            /// Validates `value` for this id's field.
            ///
            /// # Errors
            /// [`IdError`] naming the field and the rule when `value` breaks it.
            pub fn new(value: impl Into<String>) -> Result<Self, IdError> {
                Self::for_field($field, value)
            }

            /// Validates `value`, naming `field` in the error (for request bodies whose field
            /// names differ from the id type's default).
            ///
            /// # Errors
            /// [`IdError`] naming `field` and the rule when `value` breaks it.
            pub fn for_field(field: &'static str, value: impl Into<String>) -> Result<Self, IdError> {
                let value = value.into();
                $check(field, &value)?;
                Ok(Self(value.into()))
            }

            /// The id as a string slice.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The id as an owned string.
            #[must_use]
            pub fn into_string(self) -> String {
                self.0.as_ref().to_owned()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({:?})", stringify!($name), self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                Self::new(s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A tenant: `[A-Za-z0-9][A-Za-z0-9_-]{0,63}`.
    TenantId, "tenant_id", check_tenant
);
id_type!(
    /// A job: 1-200 bytes of `[A-Za-z0-9_.:@-]`.
    JobId, "job_id", check_id
);
id_type!(
    /// A chat lane (one conversation), e.g. `student:s42:main`.
    LaneId, "lane_id", check_id
);
id_type!(
    /// A client's idempotency key for a submit.
    RequestId, "request_id", check_id
);

impl TenantId {
    /// The tenant used when none is named.
    #[must_use]
    pub fn default_tenant() -> Self {
        Self(Arc::from("default"))
    }
}

impl JobId {
    /// A fresh, unique job id: time-ordered, with a random suffix (`j-<ms hex>-<rand hex>`).
    #[must_use]
    pub fn generate() -> Self {
        use std::sync::atomic::{AtomicU64, Ordering};
        use std::time::{SystemTime, UNIX_EPOCH};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // Mix time, a counter and the process id so ids from two processes do not collide.
        let mix = (u64::from(now.subsec_nanos()) ^ (u64::from(std::process::id()) << 32))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .wrapping_add(n.wrapping_mul(0xBF58_476D_1CE4_E5B9));
        Self(format!("j-{:011x}-{:016x}", now.as_millis(), mix ^ (mix >> 29)).into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_ids_of_the_original_shape_are_accepted() {
        for ok in ["student:s42:main", "teacher:t1:sess-9", "unknown:x:req.1@a", "a"] {
            assert_eq!(LaneId::new(ok).unwrap().as_str(), ok);
        }
    }

    #[test]
    fn forbidden_characters_are_refused_with_field_and_rule() {
        for bad in ["", "a b", "{t}", "a*", "a?", "a[", "é", "a\n", "a/b"] {
            let err = LaneId::new(bad).unwrap_err();
            assert_eq!(err.field, "lane_id");
            assert!(err.rule.contains("[A-Za-z0-9_.:@-]"), "{err}");
        }
        let long = "x".repeat(MAX_ID_LEN + 1);
        let err = JobId::new(long).unwrap_err();
        assert!(err.to_string().starts_with("job_id: is 201 bytes long"), "{err}");
    }

    #[test]
    fn tenant_ids_follow_their_own_rule() {
        assert!(TenantId::new("t1").is_ok());
        assert!(TenantId::new("A_b-9").is_ok());
        assert!(TenantId::new("x".repeat(64)).is_ok());
        let too_long = TenantId::new("x".repeat(65)).unwrap_err();
        assert!(too_long.rule.contains("65 bytes"), "{too_long}");
        let leading = TenantId::new("-t").unwrap_err();
        assert!(leading.rule.contains("start with"), "{leading}");
        let colon = TenantId::new("a:b").unwrap_err();
        assert!(colon.rule.contains("':'"), "{colon}");
        assert_eq!(colon.field, "tenant_id");
    }

    #[test]
    fn for_field_names_the_callers_field() {
        let err = LaneId::for_field("messages[0].lane", "{x}").unwrap_err();
        assert_eq!(err.field, "messages[0].lane");
    }

    #[test]
    fn deserializing_validates() {
        let ok: JobId = serde_json::from_str("\"j-1\"").unwrap();
        assert_eq!(ok.as_str(), "j-1");
        assert!(serde_json::from_str::<JobId>("\"j 1\"").is_err());
    }

    #[test]
    fn clones_of_an_id_share_its_text() {
        let a = JobId::generate();
        let b = a.clone();
        assert!(std::ptr::eq(a.as_str(), b.as_str()));
        assert_eq!(serde_json::to_string(&b).unwrap(), format!("\"{a}\""));
    }

    #[test]
    fn generated_job_ids_are_valid_and_distinct() {
        let a = JobId::generate();
        let b = JobId::generate();
        assert_ne!(a, b);
        assert!(JobId::new(a.as_str()).is_ok());
    }
}
