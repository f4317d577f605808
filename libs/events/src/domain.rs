//! Payloads of the domain events. Field names match the Avro schemas.

use serde::{Deserialize, Serialize};

use crate::catalog::{self, DomainEvent, EventType};

/// `pmcore.program.created.v1`: a program was defined (status `draft`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramCreated {
    pub program_id: String,
    pub organization_id: String,
    pub name: String,
    pub kind: String,
    pub status: String,
    /// Microseconds since the Unix epoch (Avro `timestamp-micros`).
    pub created_at: i64,
}

impl DomainEvent for ProgramCreated {
    const TYPE: &'static EventType = &catalog::PROGRAM_CREATED;

    fn subject(&self) -> String {
        self.program_id.clone()
    }
}
