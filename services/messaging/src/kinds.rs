//! Notification kinds: what a participant can subscribe to, the domain event each
//! comes from, and the built-in wording of its email.

use serde::Serialize;
use utoipa::ToSchema;

/// One kind of notification. Its name is the webhook's `type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, ToSchema)]
pub struct Kind {
    pub name: &'static str,
    pub description: &'static str,
    /// Built-in email subject (a minijinja template).
    #[serde(skip)]
    pub subject: &'static str,
    /// Built-in email body (a minijinja template).
    #[serde(skip)]
    pub body: &'static str,
}

macro_rules! kind {
    ($name:literal, $description:literal, $subject:literal, $body:literal) => {
        Kind {
            name: $name,
            description: $description,
            subject: $subject,
            body: $body,
        }
    };
}

pub const KINDS: &[Kind] = &[
    kind!(
        "dispatch-event.scheduled",
        "A dispatch event was scheduled in a program you are enrolled in.",
        "Event scheduled: {{ program_name }}, {{ starts_at }}",
        "A dispatch event was scheduled.\n\nProgram: {{ program_name }}\nEvent: {{ event_id }}\nFrom {{ starts_at }} to {{ ends_at }} (UTC)\nTarget: {{ target_kw }} kW ({{ signal }})\n"
    ),
    kind!(
        "dispatch-event.reminder",
        "A dispatch event starts soon.",
        "Reminder: event in {{ lead_minutes }} minutes ({{ program_name }})",
        "A dispatch event starts in {{ lead_minutes }} minutes.\n\nProgram: {{ program_name }}\nEvent: {{ event_id }}\nFrom {{ starts_at }} to {{ ends_at }} (UTC)\n"
    ),
    kind!(
        "dispatch-event.started",
        "A dispatch event started; commands went to the participating DERs.",
        "Event started: {{ program_name }}",
        "The dispatch event started.\n\nProgram: {{ program_name }}\nEvent: {{ event_id }}\nAllocated {{ allocated_kw }} of {{ target_kw }} kW across {{ participant_count }} DERs.\n"
    ),
    kind!(
        "dispatch-event.cancelled",
        "A dispatch event was cancelled.",
        "Event cancelled: {{ program_name }}",
        "The dispatch event {{ event_id }} was cancelled.\n\nProgram: {{ program_name }}\nReason: {{ reason }}\n"
    ),
    kind!(
        "dispatch-event.completed",
        "A dispatch event ended; settlement follows.",
        "Event completed: {{ program_name }}",
        "The dispatch event {{ event_id }} ended at {{ completed_at }} (UTC).\n\nProgram: {{ program_name }}\n"
    ),
    kind!(
        "dispatch-event.missed",
        "A dispatch event's window passed while the platform could not start it.",
        "Event missed: {{ program_name }}",
        "The dispatch event {{ event_id }} could not be started in its window and sent nothing.\n\nProgram: {{ program_name }}\n"
    ),
    kind!(
        "enrollment.approved",
        "An enrollment of one of your DERs was approved.",
        "Enrollment approved",
        "Enrollment {{ enrollment_id }} of DER {{ der_id }} in {{ program_name }} was approved ({{ to_status }}).\n"
    ),
    kind!(
        "enrollment.rejected",
        "An enrollment of one of your DERs was rejected.",
        "Enrollment rejected",
        "Enrollment {{ enrollment_id }} of DER {{ der_id }} in {{ program_name }} was rejected.\n{% if reason %}Reason: {{ reason }}\n{% endif %}"
    ),
    kind!(
        "settlement.calculated",
        "An event was settled: delivered energy and incentives per organization.",
        "Settlement ready: {{ program_name }}",
        "The settlement of event {{ event_id }} (version {{ version }}) is ready.\n\nDelivered: {{ delivered_kwh }} kWh\nTotal: {{ total_amount }} {{ currency }}\n"
    ),
    kind!(
        "file.imported",
        "A file you uploaded was imported.",
        "File imported: {{ kind }}",
        "Your {{ kind }} file {{ file_id }} was imported: {{ rows_imported }} of {{ rows_read }} rows changed something.\n"
    ),
    kind!(
        "file.rejected",
        "A file you uploaded was rejected and changed nothing.",
        "File rejected",
        "Your file {{ object_key }} was rejected and changed nothing.\n\nReason: {{ reason }}\n{% if report_key %}Error report: {{ report_key }}\n{% endif %}"
    ),
    kind!(
        "gateway.offline",
        "One of your gateways disconnected from the platform.",
        "Gateway offline",
        "Gateway {{ gateway_id }} disconnected at {{ disconnected_at }} (UTC): {{ reason }}.\n"
    ),
    kind!(
        "endpoint.disabled",
        "One of your webhook endpoints was disabled after failing.",
        "Webhook endpoint disabled",
        "The webhook endpoint {{ url }} was disabled: {{ reason }}.\nEnable it again once it answers.\n"
    ),
    kind!(
        "endpoint.test",
        "A test message, sent on request.",
        "Test message",
        "This is a test message from pmcore.\n"
    ),
];

pub fn find(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

/// Every kind's name, for error messages.
pub fn names() -> String {
    KINDS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}
