//! Capacity classes for expensive work (OCR, LLM calls) and the limiter that enforces them.

use std::fmt;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::error::QueueResult;

/// A class of capped work. The declaration order is the acquisition order: permits are always
/// taken `ocr`, then `llm`, then `llm_student`, then `llm_teacher`, so two jobs can never wait
/// on each other's permits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitClass {
    /// OCR work.
    Ocr,
    /// Any LLM call.
    Llm,
    /// LLM calls for students.
    LlmStudent,
    /// LLM calls for teachers.
    LlmTeacher,
}

impl LimitClass {
    /// Every class, in acquisition order.
    pub const ALL: [Self; 4] = [Self::Ocr, Self::Llm, Self::LlmStudent, Self::LlmTeacher];

    /// The wire name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Ocr => "ocr",
            Self::Llm => "llm",
            Self::LlmStudent => "llm_student",
            Self::LlmTeacher => "llm_teacher",
        }
    }
}

impl fmt::Display for LimitClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Capacity of each class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitCaps {
    /// `OCR_MAX_CONCURRENCY`.
    pub ocr: usize,
    /// `LLM_MAX_CONCURRENCY`.
    pub llm: usize,
    /// `LLM_MAX_CONCURRENCY_STUDENT`.
    pub llm_student: usize,
    /// `LLM_MAX_CONCURRENCY_TEACHER`.
    pub llm_teacher: usize,
}

impl LimitCaps {
    /// The capacity of `class`.
    #[must_use]
    pub const fn of(&self, class: LimitClass) -> usize {
        match class {
            LimitClass::Ocr => self.ocr,
            LimitClass::Llm => self.llm,
            LimitClass::LlmStudent => self.llm_student,
            LimitClass::LlmTeacher => self.llm_teacher,
        }
    }
}

impl Default for LimitCaps {
    fn default() -> Self {
        Self { ocr: 4, llm: 8, llm_student: 8, llm_teacher: 8 }
    }
}

/// Permits held, to be given back with [`Limiter::release`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermitSet {
    /// The classes held, in acquisition order.
    pub classes: Vec<LimitClass>,
    /// Identifies this holding (a lease id for distributed limiters).
    pub token: String,
}

/// Use of one class right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PermitUsage {
    /// The class.
    pub class: LimitClass,
    /// Permits held.
    pub in_use: usize,
    /// Capacity.
    pub capacity: usize,
}

/// Enforces [`LimitCaps`].
#[cfg_attr(feature = "test-util", mockall::automock)]
#[async_trait]
pub trait Limiter: Send + Sync + fmt::Debug {
    /// Waits until one permit of every class in `classes` is free and takes them, in
    /// [`LimitClass`] order whatever order they were given in. Duplicates count once.
    async fn acquire(&self, classes: &[LimitClass]) -> QueueResult<PermitSet>;

    /// Gives `permits` back.
    async fn release(&self, permits: PermitSet) -> QueueResult<()>;

    /// Permits in use per class.
    async fn usage(&self) -> QueueResult<Vec<PermitUsage>>;
}

/// The classes in acquisition order, without duplicates.
#[must_use]
pub fn acquisition_order(classes: &[LimitClass]) -> Vec<LimitClass> {
    let mut v = classes.to_vec();
    v.sort_unstable();
    v.dedup();
    v
}
