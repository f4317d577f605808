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

/// `pmcore.program.updated.v1`: a draft program was edited.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramUpdated {
    pub program_id: String,
    pub organization_id: String,
    pub changed_fields: Vec<String>,
    /// The program after the edit, as the REST API renders it.
    pub program_json: String,
    pub updated_at: i64,
}

impl DomainEvent for ProgramUpdated {
    const TYPE: &'static EventType = &catalog::PROGRAM_UPDATED;

    fn subject(&self) -> String {
        self.program_id.clone()
    }
}

/// `pmcore.program.status-changed.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProgramStatusChanged {
    pub program_id: String,
    pub organization_id: String,
    pub from_status: String,
    pub to_status: String,
    pub changed_at: i64,
}

impl DomainEvent for ProgramStatusChanged {
    const TYPE: &'static EventType = &catalog::PROGRAM_STATUS_CHANGED;

    fn subject(&self) -> String {
        self.program_id.clone()
    }
}
