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

/// `pmcore.der.registered.v1`: a DER was added to the warehouse.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DerRegistered {
    pub der_id: String,
    pub organization_id: String,
    pub gateway_id: Option<String>,
    pub external_id: Option<String>,
    pub der_type: String,
    pub nameplate_kw: f64,
    pub nameplate_kwh: Option<f64>,
    pub feeder: Option<String>,
    pub substation: Option<String>,
    pub registered_at: i64,
}

impl DomainEvent for DerRegistered {
    const TYPE: &'static EventType = &catalog::DER_REGISTERED;

    fn subject(&self) -> String {
        self.der_id.clone()
    }
}

/// `pmcore.der.updated.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DerUpdated {
    pub der_id: String,
    pub organization_id: String,
    pub changed_fields: Vec<String>,
    pub der_json: String,
    pub updated_at: i64,
}

impl DomainEvent for DerUpdated {
    const TYPE: &'static EventType = &catalog::DER_UPDATED;

    fn subject(&self) -> String {
        self.der_id.clone()
    }
}

/// `pmcore.der.decommissioned.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DerDecommissioned {
    pub der_id: String,
    pub organization_id: String,
    pub decommissioned_at: i64,
}

impl DomainEvent for DerDecommissioned {
    const TYPE: &'static EventType = &catalog::DER_DECOMMISSIONED;

    fn subject(&self) -> String {
        self.der_id.clone()
    }
}

/// `pmcore.gateway.registered.v1` (never carries the secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayRegistered {
    pub gateway_id: String,
    pub organization_id: String,
    pub name: String,
    pub firmware: Option<String>,
    pub registered_at: i64,
}

impl DomainEvent for GatewayRegistered {
    const TYPE: &'static EventType = &catalog::GATEWAY_REGISTERED;

    fn subject(&self) -> String {
        self.gateway_id.clone()
    }
}

/// `pmcore.gateway.secret-rotated.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewaySecretRotated {
    pub gateway_id: String,
    pub organization_id: String,
    pub rotated_at: i64,
}

impl DomainEvent for GatewaySecretRotated {
    const TYPE: &'static EventType = &catalog::GATEWAY_SECRET_ROTATED;

    fn subject(&self) -> String {
        self.gateway_id.clone()
    }
}

/// `pmcore.enrollment.requested.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollmentRequested {
    pub enrollment_id: String,
    pub program_id: String,
    pub der_id: String,
    pub organization_id: String,
    pub committed_kw: f64,
    pub requested_at: i64,
}

impl DomainEvent for EnrollmentRequested {
    const TYPE: &'static EventType = &catalog::ENROLLMENT_REQUESTED;

    fn subject(&self) -> String {
        self.enrollment_id.clone()
    }
}

/// `pmcore.enrollment.status-changed.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnrollmentStatusChanged {
    pub enrollment_id: String,
    pub program_id: String,
    pub der_id: String,
    pub organization_id: String,
    pub from_status: String,
    pub to_status: String,
    pub reason: Option<String>,
    pub decided_by: String,
    pub changed_at: i64,
}

impl DomainEvent for EnrollmentStatusChanged {
    const TYPE: &'static EventType = &catalog::ENROLLMENT_STATUS_CHANGED;

    fn subject(&self) -> String {
        self.enrollment_id.clone()
    }
}

/// `pmcore.dispatch-event.scheduled.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchEventScheduled {
    pub event_id: String,
    pub program_id: String,
    pub starts_at: i64,
    pub ends_at: i64,
    pub target_kw: f64,
    pub signal: String,
    pub signal_value: f64,
    pub enrolled_der_count: i32,
    pub scheduled_at: i64,
}

impl DomainEvent for DispatchEventScheduled {
    const TYPE: &'static EventType = &catalog::DISPATCH_EVENT_SCHEDULED;

    fn subject(&self) -> String {
        self.event_id.clone()
    }
}

/// `pmcore.dispatch-event.cancelled.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchEventCancelled {
    pub event_id: String,
    pub program_id: String,
    pub reason: String,
    pub cancelled_at: i64,
}

impl DomainEvent for DispatchEventCancelled {
    const TYPE: &'static EventType = &catalog::DISPATCH_EVENT_CANCELLED;

    fn subject(&self) -> String {
        self.event_id.clone()
    }
}

/// `pmcore.dispatch-event.opted-out.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchEventOptedOut {
    pub event_id: String,
    pub program_id: String,
    pub der_id: String,
    pub organization_id: String,
    pub reason: Option<String>,
    pub opted_out_at: i64,
}

impl DomainEvent for DispatchEventOptedOut {
    const TYPE: &'static EventType = &catalog::DISPATCH_EVENT_OPTED_OUT;

    fn subject(&self) -> String {
        self.event_id.clone()
    }
}

/// `pmcore.dispatch-event.reminder.v1`: a scheduled event starts in `lead_minutes`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchEventReminder {
    pub event_id: String,
    pub program_id: String,
    pub starts_at: i64,
    pub ends_at: i64,
    pub lead_minutes: i32,
    pub target_kw: f64,
    pub signal: String,
    pub signal_value: f64,
}

impl DomainEvent for DispatchEventReminder {
    const TYPE: &'static EventType = &catalog::DISPATCH_EVENT_REMINDER;

    fn subject(&self) -> String {
        self.event_id.clone()
    }
}

/// `pmcore.dispatch-event.started.v1`: the scheduler activated the event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchEventStarted {
    pub event_id: String,
    pub program_id: String,
    pub starts_at: i64,
    pub started_at: i64,
    pub late_by_ms: i64,
    pub target_kw: f64,
    pub allocated_kw: f64,
    pub participant_count: i32,
}

impl DomainEvent for DispatchEventStarted {
    const TYPE: &'static EventType = &catalog::DISPATCH_EVENT_STARTED;

    fn subject(&self) -> String {
        self.event_id.clone()
    }
}

/// `pmcore.dispatch-event.completed.v1`: the event's window ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchEventCompleted {
    pub event_id: String,
    pub program_id: String,
    pub starts_at: i64,
    pub ends_at: i64,
    pub completed_at: i64,
    pub target_kw: f64,
    pub allocated_kw: f64,
    pub participant_count: i32,
}

impl DomainEvent for DispatchEventCompleted {
    const TYPE: &'static EventType = &catalog::DISPATCH_EVENT_COMPLETED;

    fn subject(&self) -> String {
        self.event_id.clone()
    }
}

/// `pmcore.organization.created.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrganizationCreated {
    pub organization_id: String,
    pub name: String,
    pub kind: String,
    pub created_at: i64,
}

impl DomainEvent for OrganizationCreated {
    const TYPE: &'static EventType = &catalog::ORGANIZATION_CREATED;

    fn subject(&self) -> String {
        self.organization_id.clone()
    }
}

/// `pmcore.api-client.created.v1` (never the secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiClientCreated {
    pub client_id: String,
    pub organization_id: String,
    pub name: String,
    pub roles: Vec<String>,
    pub created_at: i64,
}

impl DomainEvent for ApiClientCreated {
    const TYPE: &'static EventType = &catalog::API_CLIENT_CREATED;

    fn subject(&self) -> String {
        self.organization_id.clone()
    }
}

/// `pmcore.api-client.disabled.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiClientDisabled {
    pub client_id: String,
    pub organization_id: String,
    pub disabled_at: i64,
}

impl DomainEvent for ApiClientDisabled {
    const TYPE: &'static EventType = &catalog::API_CLIENT_DISABLED;

    fn subject(&self) -> String {
        self.organization_id.clone()
    }
}

/// `pmcore.settlement.calculated.v1`: a version of an event's measurement and
/// settlement was computed and stored. Amounts are exact decimals as strings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettlementCalculated {
    pub event_id: String,
    pub program_id: String,
    pub run_id: String,
    pub version: i32,
    pub computed_at: i64,
    pub reason: String,
    pub method: String,
    pub der_count: i32,
    pub measured_count: i32,
    pub delivered_kwh: String,
    pub total_amount: String,
    pub currency: String,
    pub report_key: String,
    pub chart_key: String,
    pub organizations: Vec<OrganizationSettlement>,
}

/// One organization's share of a settlement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrganizationSettlement {
    pub settlement_id: String,
    pub organization_id: String,
    pub der_count: i32,
    pub measured_count: i32,
    pub delivered_kwh: String,
    pub total: String,
}

impl DomainEvent for SettlementCalculated {
    const TYPE: &'static EventType = &catalog::SETTLEMENT_CALCULATED;

    fn subject(&self) -> String {
        self.event_id.clone()
    }
}

/// `pmcore.dispatch-event.missed.v1`: the window passed while no scheduler ran.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DispatchEventMissed {
    pub event_id: String,
    pub program_id: String,
    pub starts_at: i64,
    pub ends_at: i64,
    pub missed_at: i64,
}

impl DomainEvent for DispatchEventMissed {
    const TYPE: &'static EventType = &catalog::DISPATCH_EVENT_MISSED;

    fn subject(&self) -> String {
        self.event_id.clone()
    }
}

/// `pmcore.gateway.connected.v1`: a gateway authenticated to a relay instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayConnected {
    pub gateway_id: String,
    pub organization_id: String,
    pub session_id: String,
    pub relay_instance: String,
    pub firmware: Option<String>,
    pub connected_at: i64,
}

impl DomainEvent for GatewayConnected {
    const TYPE: &'static EventType = &catalog::GATEWAY_CONNECTED;

    fn subject(&self) -> String {
        self.gateway_id.clone()
    }
}

/// `pmcore.gateway.disconnected.v1`: a gateway's session ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GatewayDisconnected {
    pub gateway_id: String,
    pub organization_id: String,
    pub session_id: String,
    pub reason: String,
    pub disconnected_at: i64,
}

impl DomainEvent for GatewayDisconnected {
    const TYPE: &'static EventType = &catalog::GATEWAY_DISCONNECTED;

    fn subject(&self) -> String {
        self.gateway_id.clone()
    }
}

/// `pmcore.der.telemetry.v1`: one gateway batch of readings, keyed by gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryBatch {
    pub batch_id: String,
    pub gateway_id: String,
    pub organization_id: String,
    pub received_at: i64,
    pub readings: Vec<Reading>,
}

/// One measurement of one DER.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub der_id: String,
    /// Microseconds since the Unix epoch.
    pub ts: i64,
    pub power_kw: f64,
    pub soc_pct: Option<f32>,
}

impl DomainEvent for TelemetryBatch {
    const TYPE: &'static EventType = &catalog::TELEMETRY_BATCH;

    fn subject(&self) -> String {
        self.gateway_id.clone()
    }
}

/// `pmcore.der.command.v1`: one DER's instruction, for its gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DerCommand {
    pub command_id: String,
    pub gateway_id: String,
    pub der_id: String,
    pub event_id: Option<String>,
    pub kind: String,
    pub value_kw: f64,
    pub start: i64,
    pub end: i64,
    pub expires_at: i64,
}

impl DomainEvent for DerCommand {
    const TYPE: &'static EventType = &catalog::DER_COMMAND;

    fn subject(&self) -> String {
        self.gateway_id.clone()
    }
}

/// `pmcore.der.command-ack.v1`: a gateway's answer to a command, or its expiry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DerCommandAck {
    pub command_id: String,
    pub gateway_id: String,
    pub der_id: Option<String>,
    pub status: String,
    pub reason: Option<String>,
    pub acked_at: i64,
}

impl DomainEvent for DerCommandAck {
    const TYPE: &'static EventType = &catalog::DER_COMMAND_ACK;

    fn subject(&self) -> String {
        self.gateway_id.clone()
    }
}

/// `pmcore.telemetry.anomaly-detected.v1`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TelemetryAnomalyDetected {
    pub anomaly_id: String,
    pub organization_id: String,
    pub der_id: Option<String>,
    pub gateway_id: Option<String>,
    pub kind: String,
    pub detail: String,
    pub value_kw: Option<f64>,
    pub observed_at: i64,
    pub detected_at: i64,
}

impl DomainEvent for TelemetryAnomalyDetected {
    const TYPE: &'static EventType = &catalog::TELEMETRY_ANOMALY_DETECTED;

    fn subject(&self) -> String {
        self.der_id
            .clone()
            .or_else(|| self.gateway_id.clone())
            .unwrap_or_else(|| self.anomaly_id.clone())
    }
}

/// `pmcore.file.received.v1`: the bucket watcher noticed a new object version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileReceived {
    pub file_id: String,
    pub organization_id: String,
    pub kind: String,
    pub name: String,
    pub bucket: String,
    pub object_key: String,
    pub object_version: String,
    pub size_bytes: i64,
    pub received_at: i64,
}

impl DomainEvent for FileReceived {
    const TYPE: &'static EventType = &catalog::FILE_RECEIVED;

    fn subject(&self) -> String {
        self.file_id.clone()
    }
}

/// `pmcore.file.imported.v1`: every row was valid and is committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileImported {
    pub file_id: String,
    pub organization_id: String,
    pub kind: String,
    pub rows_read: i64,
    pub rows_imported: i64,
    pub imported_at: i64,
}

impl DomainEvent for FileImported {
    const TYPE: &'static EventType = &catalog::FILE_IMPORTED;

    fn subject(&self) -> String {
        self.file_id.clone()
    }
}

/// `pmcore.messaging.requested.v1`: notify one organization of something.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MessagingRequested {
    pub organization_id: String,
    pub kind: String,
    pub subject: String,
    pub data_json: String,
    pub requested_at: i64,
}

impl DomainEvent for MessagingRequested {
    const TYPE: &'static EventType = &catalog::MESSAGING_REQUESTED;

    fn subject(&self) -> String {
        self.organization_id.clone()
    }
}

/// `pmcore.file.rejected.v1`: the file changed nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRejected {
    pub file_id: String,
    pub organization_id: Option<String>,
    pub kind: Option<String>,
    pub object_key: String,
    pub reason: String,
    pub rows_read: i64,
    pub rows_rejected: i64,
    pub report_key: Option<String>,
    pub rejected_at: i64,
}

impl DomainEvent for FileRejected {
    const TYPE: &'static EventType = &catalog::FILE_REJECTED;

    fn subject(&self) -> String {
        self.file_id.clone()
    }
}

/// `pmcore.auth.logins-refused.v1`: token requests refused over a window, counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoginsRefused {
    pub window_start: i64,
    pub window_end: i64,
    pub total: i64,
    pub clients: Vec<RefusedClient>,
}

/// Refusals of one client id for one reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefusedClient {
    pub client_id: Option<String>,
    pub reason: String,
    pub count: i64,
}

impl DomainEvent for LoginsRefused {
    const TYPE: &'static EventType = &catalog::LOGINS_REFUSED;

    fn subject(&self) -> String {
        "api-logins".to_owned()
    }
}
