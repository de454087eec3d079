//! Laneway's application core: settings from the environment, the concrete job handlers, the
//! tenant wiring, and the chat start/status flow. A thin adapter over the queue layers, with no
//! queue logic of its own.
//!
//! The `app` binary builds a [`Laneway`] from [`Settings`] and serves it.

pub mod api;
pub mod client;
pub mod diagnose;
mod error;
pub mod handlers;
pub mod metrics;
pub mod ops;
pub mod payloads;
pub mod responder;
mod service;
pub mod settings;
pub mod tenants;
pub mod wiring;

pub use client::{ClientConfig, ClientError, LanewayClient};
pub use error::AppError;
pub use metrics::TenantMetrics;
pub use ops::{Ops, ProcessIdentity};
pub use queue_core::{JobId, JobKind, JobStatus, LaneId, Mode, TenantId};
pub use service::{Health, Laneway};
pub use settings::{LogFormat, Settings, SettingsError};
pub use tenants::{KeyCheck, TenantDirectory, TenantRequest};
