//! The event contract as code.
//!
//! `asyncapi/asyncapi.yaml` is the source of truth; this crate mirrors it so that a
//! service can only publish what the document describes. The `contract` test fails
//! when the two drift apart.

pub mod avro;
pub mod canonical;
pub mod catalog;
pub mod domain;
pub mod envelope;

pub use avro::{DecodeError, Decoded, EncodeError};
pub use catalog::{DomainEvent, EventType, Topic};
pub use envelope::{Envelope, HeaderError};
