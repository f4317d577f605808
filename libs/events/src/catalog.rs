//! Topics and event types, mirrored from `asyncapi/asyncapi.yaml`.

use serde::{Serialize, de::DeserializeOwned};

/// A logical Kafka topic. Deployments may prefix it (see `pmcore-kafka`), which is
/// how tests run in parallel against one broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Topic {
    pub name: &'static str,
    /// Domain topics carry state changes of aggregates and are read by the audit log.
    pub domain: bool,
}

pub const ORGANIZATIONS: Topic = domain("pm.organizations.v1");
pub const PROGRAMS: Topic = domain("pm.programs.v1");
pub const DERS: Topic = domain("pm.ders.v1");
pub const GATEWAYS: Topic = domain("pm.gateways.v1");
pub const ENROLLMENTS: Topic = domain("pm.enrollments.v1");
pub const DISPATCH_EVENTS: Topic = domain("pm.dispatch-events.v1");
pub const SETTLEMENTS: Topic = domain("pm.settlements.v1");
pub const FILES: Topic = domain("pm.files.v1");
pub const TELEMETRY: Topic = stream("der.telemetry.v1");
pub const COMMANDS: Topic = stream("der.commands.v1");
pub const COMMAND_ACKS: Topic = stream("der.command-acks.v1");
pub const MESSAGING_REQUESTS: Topic = stream("messaging.requests.v1");

const fn domain(name: &'static str) -> Topic {
    Topic { name, domain: true }
}

const fn stream(name: &'static str) -> Topic {
    Topic {
        name,
        domain: false,
    }
}

/// Every topic the platform uses, in the order the AsyncAPI document lists them.
pub const TOPICS: &[Topic] = &[
    ORGANIZATIONS,
    PROGRAMS,
    DERS,
    GATEWAYS,
    ENROLLMENTS,
    DISPATCH_EVENTS,
    SETTLEMENTS,
    FILES,
    TELEMETRY,
    COMMANDS,
    COMMAND_ACKS,
    MESSAGING_REQUESTS,
];

/// The topics whose events the audit log records.
pub fn domain_topics() -> impl Iterator<Item = Topic> {
    TOPICS.iter().copied().filter(|t| t.domain)
}

/// One message type: its CloudEvents type, the topic it travels on and its Avro schema.
#[derive(Debug, PartialEq, Eq)]
pub struct EventType {
    /// CloudEvents `type`, e.g. `pmcore.program.created.v1`.
    pub ce_type: &'static str,
    pub topic: Topic,
    /// File name under `asyncapi/schemas/`.
    pub schema_file: &'static str,
    /// The schema text, embedded at compile time from that file.
    pub schema_json: &'static str,
}

macro_rules! event_type {
    ($ce_type:literal, $topic:expr, $file:literal) => {
        EventType {
            ce_type: $ce_type,
            topic: $topic,
            schema_file: $file,
            schema_json: include_str!(concat!("../../../asyncapi/schemas/", $file)),
        }
    };
}

pub static ORGANIZATION_CREATED: EventType = event_type!(
    "pmcore.organization.created.v1",
    ORGANIZATIONS,
    "organization-created.avsc"
);

pub static API_CLIENT_CREATED: EventType = event_type!(
    "pmcore.api-client.created.v1",
    ORGANIZATIONS,
    "api-client-created.avsc"
);

pub static API_CLIENT_DISABLED: EventType = event_type!(
    "pmcore.api-client.disabled.v1",
    ORGANIZATIONS,
    "api-client-disabled.avsc"
);

pub static LOGINS_REFUSED: EventType = event_type!(
    "pmcore.auth.logins-refused.v1",
    ORGANIZATIONS,
    "logins-refused.avsc"
);

pub static PROGRAM_CREATED: EventType = event_type!(
    "pmcore.program.created.v1",
    PROGRAMS,
    "program-created.avsc"
);

pub static PROGRAM_UPDATED: EventType = event_type!(
    "pmcore.program.updated.v1",
    PROGRAMS,
    "program-updated.avsc"
);

pub static PROGRAM_STATUS_CHANGED: EventType = event_type!(
    "pmcore.program.status-changed.v1",
    PROGRAMS,
    "program-status-changed.avsc"
);

pub static DER_REGISTERED: EventType =
    event_type!("pmcore.der.registered.v1", DERS, "der-registered.avsc");

pub static DER_UPDATED: EventType = event_type!("pmcore.der.updated.v1", DERS, "der-updated.avsc");

pub static DER_DECOMMISSIONED: EventType = event_type!(
    "pmcore.der.decommissioned.v1",
    DERS,
    "der-decommissioned.avsc"
);

pub static GATEWAY_REGISTERED: EventType = event_type!(
    "pmcore.gateway.registered.v1",
    GATEWAYS,
    "gateway-registered.avsc"
);

pub static GATEWAY_SECRET_ROTATED: EventType = event_type!(
    "pmcore.gateway.secret-rotated.v1",
    GATEWAYS,
    "gateway-secret-rotated.avsc"
);

pub static ENROLLMENT_REQUESTED: EventType = event_type!(
    "pmcore.enrollment.requested.v1",
    ENROLLMENTS,
    "enrollment-requested.avsc"
);

pub static ENROLLMENT_STATUS_CHANGED: EventType = event_type!(
    "pmcore.enrollment.status-changed.v1",
    ENROLLMENTS,
    "enrollment-status-changed.avsc"
);

pub static DISPATCH_EVENT_SCHEDULED: EventType = event_type!(
    "pmcore.dispatch-event.scheduled.v1",
    DISPATCH_EVENTS,
    "dispatch-event-scheduled.avsc"
);

pub static DISPATCH_EVENT_CANCELLED: EventType = event_type!(
    "pmcore.dispatch-event.cancelled.v1",
    DISPATCH_EVENTS,
    "dispatch-event-cancelled.avsc"
);

pub static DISPATCH_EVENT_OPTED_OUT: EventType = event_type!(
    "pmcore.dispatch-event.opted-out.v1",
    DISPATCH_EVENTS,
    "dispatch-event-opted-out.avsc"
);

pub static DISPATCH_EVENT_REMINDER: EventType = event_type!(
    "pmcore.dispatch-event.reminder.v1",
    DISPATCH_EVENTS,
    "dispatch-event-reminder.avsc"
);

pub static DISPATCH_EVENT_STARTED: EventType = event_type!(
    "pmcore.dispatch-event.started.v1",
    DISPATCH_EVENTS,
    "dispatch-event-started.avsc"
);

pub static DISPATCH_EVENT_COMPLETED: EventType = event_type!(
    "pmcore.dispatch-event.completed.v1",
    DISPATCH_EVENTS,
    "dispatch-event-completed.avsc"
);

pub static DISPATCH_EVENT_MISSED: EventType = event_type!(
    "pmcore.dispatch-event.missed.v1",
    DISPATCH_EVENTS,
    "dispatch-event-missed.avsc"
);

pub static SETTLEMENT_CALCULATED: EventType = event_type!(
    "pmcore.settlement.calculated.v1",
    SETTLEMENTS,
    "settlement-calculated.avsc"
);

pub static FILE_RECEIVED: EventType =
    event_type!("pmcore.file.received.v1", FILES, "file-received.avsc");

pub static FILE_IMPORTED: EventType =
    event_type!("pmcore.file.imported.v1", FILES, "file-imported.avsc");

pub static FILE_REJECTED: EventType =
    event_type!("pmcore.file.rejected.v1", FILES, "file-rejected.avsc");

pub static MESSAGING_REQUESTED: EventType = event_type!(
    "pmcore.messaging.requested.v1",
    MESSAGING_REQUESTS,
    "messaging-requested.avsc"
);

pub static GATEWAY_CONNECTED: EventType = event_type!(
    "pmcore.gateway.connected.v1",
    GATEWAYS,
    "gateway-connected.avsc"
);

pub static GATEWAY_DISCONNECTED: EventType = event_type!(
    "pmcore.gateway.disconnected.v1",
    GATEWAYS,
    "gateway-disconnected.avsc"
);

pub static TELEMETRY_BATCH: EventType =
    event_type!("pmcore.der.telemetry.v1", TELEMETRY, "telemetry-batch.avsc");

pub static DER_COMMAND: EventType =
    event_type!("pmcore.der.command.v1", COMMANDS, "der-command.avsc");

pub static DER_COMMAND_ACK: EventType = event_type!(
    "pmcore.der.command-ack.v1",
    COMMAND_ACKS,
    "der-command-ack.avsc"
);

pub static TELEMETRY_ANOMALY_DETECTED: EventType = event_type!(
    "pmcore.telemetry.anomaly-detected.v1",
    DERS,
    "telemetry-anomaly-detected.avsc"
);

/// Every event type the code can publish or consume.
pub static EVENT_TYPES: &[&EventType] = &[
    &ORGANIZATION_CREATED,
    &API_CLIENT_CREATED,
    &API_CLIENT_DISABLED,
    &LOGINS_REFUSED,
    &PROGRAM_CREATED,
    &PROGRAM_UPDATED,
    &PROGRAM_STATUS_CHANGED,
    &DER_REGISTERED,
    &DER_UPDATED,
    &DER_DECOMMISSIONED,
    &GATEWAY_REGISTERED,
    &GATEWAY_SECRET_ROTATED,
    &ENROLLMENT_REQUESTED,
    &ENROLLMENT_STATUS_CHANGED,
    &DISPATCH_EVENT_SCHEDULED,
    &DISPATCH_EVENT_CANCELLED,
    &DISPATCH_EVENT_OPTED_OUT,
    &DISPATCH_EVENT_REMINDER,
    &DISPATCH_EVENT_STARTED,
    &DISPATCH_EVENT_COMPLETED,
    &DISPATCH_EVENT_MISSED,
    &SETTLEMENT_CALCULATED,
    &FILE_RECEIVED,
    &FILE_IMPORTED,
    &FILE_REJECTED,
    &MESSAGING_REQUESTED,
    &GATEWAY_CONNECTED,
    &GATEWAY_DISCONNECTED,
    &TELEMETRY_BATCH,
    &DER_COMMAND,
    &DER_COMMAND_ACK,
    &TELEMETRY_ANOMALY_DETECTED,
];

pub fn event_type(ce_type: &str) -> Option<&'static EventType> {
    EVENT_TYPES.iter().copied().find(|t| t.ce_type == ce_type)
}

/// A payload type bound to its entry in the catalog. Only implementors can be
/// published, so code cannot emit a message the contract does not describe.
pub trait DomainEvent: Serialize + DeserializeOwned {
    const TYPE: &'static EventType;

    /// The aggregate id: Kafka key and CloudEvents `subject`.
    fn subject(&self) -> String;
}
