//! The refund-relay pipeline, shared by every Lambda function, the local runner and the tests.
//!
//! One webhook goes `verify` → `providers` (parse + normalize) → `store` (one conditional write);
//! the stored event then goes `fanout` (advance the refund's status, `notify` its audiences).
//! [`receive::Receiver`] is the whole receiving half as one call.

pub mod api;
pub mod config;
pub mod credentials;
pub mod echo;
pub mod erase;
pub mod event;
pub mod fanout;
pub mod held;
pub mod metrics;
pub mod money;
pub mod notify;
pub mod operate;
pub mod providers;
pub mod receive;
pub mod reconcile;
pub mod secrets;
pub mod store;
pub mod timestamp;
pub mod verify;

pub use event::{EventKind, Provider, RefundEvent, Status};
pub use receive::{Receipt, Receiver, WebhookRequest};
