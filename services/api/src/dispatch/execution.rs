//! What a running (or finished) event did: each DER's command and its status, and a
//! live summary with the fleet's response read from telemetry.
//!
//! A command's status comes from two records: the scheduler's allocation row (was
//! it put on `der.commands.v1`?) and the relay's `pm.der_command` row (stored,
//! delivered to the gateway, acknowledged). Participants see their own DERs only.

use axum::extract::State;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, Postgres, QueryBuilder};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::fetch;
use crate::{
    auth::Principal,
    error::{ApiError, ApiResult, Problem},
    extract::{Json, Path, Query},
    pagination::{Page, PageParams},
    state::AppState,
};

/// Where one DER's command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    /// Allocated; not yet handed to the relays (or not yet delivered to an offline gateway).
    Pending,
    /// Delivered to the gateway's session; no answer yet.
    Sent,
    Received,
    Applied,
    Rejected,
    /// The event ended before the gateway could be reached.
    Expired,
    /// The DER opted out before its command went out; it got none.
    OptedOut,
}

impl CommandStatus {
    const ALL: [CommandStatus; 7] = [
        CommandStatus::Pending,
        CommandStatus::Sent,
        CommandStatus::Received,
        CommandStatus::Applied,
        CommandStatus::Rejected,
        CommandStatus::Expired,
        CommandStatus::OptedOut,
    ];

    fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Pending => "pending",
            CommandStatus::Sent => "sent",
            CommandStatus::Received => "received",
            CommandStatus::Applied => "applied",
            CommandStatus::Rejected => "rejected",
            CommandStatus::Expired => "expired",
            CommandStatus::OptedOut => "opted_out",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// The status as SQL over `a` (allocation), `c` (the relay's command row) and the
/// opt-out, so lists can filter on it.
const STATUS_SQL: &str = "case
        when c.id is not null and c.status <> 'pending' then c.status
        when c.delivered_at is not null then 'sent'
        when a.command_sent_at is null and o.der_id is not null then 'opted_out'
        else 'pending' end";

#[derive(Debug, Serialize, ToSchema)]
pub struct CommandOut {
    pub der_id: Uuid,
    pub gateway_id: Uuid,
    pub organization_id: Uuid,
    pub command_id: Uuid,
    /// `curtail_kw` or `setpoint_kw`.
    pub kind: String,
    /// The command's value: the allocation for a curtailment, the setpoint otherwise.
    pub value_kw: f64,
    pub committed_kw: f64,
    /// This DER's share of the event's target.
    pub allocated_kw: f64,
    pub status: CommandStatus,
    /// Why the gateway rejected it, or why it expired.
    pub reason: Option<String>,
    /// When the scheduler put it on `der.commands.v1`.
    pub sent_at: Option<DateTime<Utc>>,
    /// When a relay handed it to the gateway.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When the gateway's last acknowledgement (or the expiry) was recorded.
    pub acked_at: Option<DateTime<Utc>>,
    /// When the release went out, and why (`completed`, `cancelled`, `opted_out`).
    pub released_at: Option<DateTime<Utc>>,
    pub release_reason: Option<String>,
}

#[derive(FromRow)]
struct CommandRow {
    der_id: Uuid,
    gateway_id: Uuid,
    organization_id: Uuid,
    command_id: Uuid,
    command_kind: String,
    command_value_kw: f64,
    committed_kw: f64,
    allocated_kw: f64,
    status: String,
    reason: Option<String>,
    command_sent_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
    acked_at: Option<DateTime<Utc>>,
    release_sent_at: Option<DateTime<Utc>>,
    release_reason: Option<String>,
}

impl TryFrom<CommandRow> for CommandOut {
    type Error = anyhow::Error;

    fn try_from(r: CommandRow) -> anyhow::Result<Self> {
        Ok(Self {
            der_id: r.der_id,
            gateway_id: r.gateway_id,
            organization_id: r.organization_id,
            command_id: r.command_id,
            kind: r.command_kind,
            value_kw: r.command_value_kw,
            committed_kw: r.committed_kw,
            allocated_kw: r.allocated_kw,
            status: CommandStatus::parse(&r.status)
                .ok_or_else(|| anyhow::anyhow!("unexpected command status `{}`", r.status))?,
            reason: r.reason,
            sent_at: r.command_sent_at,
            delivered_at: r.delivered_at,
            acked_at: r.acked_at,
            released_at: r.release_sent_at,
            release_reason: r.release_reason,
        })
    }
}

const FROM: &str = "from pm.dispatch_allocation a
    left join pm.der_command c on c.id = a.command_id
    left join pm.dispatch_opt_out o on o.event_id = a.event_id and o.der_id = a.der_id";

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct CommandFilter {
    status: Option<CommandStatus>,
    gateway_id: Option<Uuid>,
    organization_id: Option<Uuid>,
    limit: Option<u32>,
    cursor: Option<String>,
}

/// Each participating DER's command for the event, ordered by DER id.
#[utoipa::path(
    get, path = "/v1/dispatch-events/{id}/commands", operation_id = "dispatch_event.commands", tag = "dispatch-events",
    params(("id" = Uuid, Path, description = "Dispatch event id"), CommandFilter),
    responses(
        (status = 200, body = Page<CommandOut>),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 422, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn commands(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
    Query(filter): Query<CommandFilter>,
) -> ApiResult<Json<Page<CommandOut>>> {
    let page = PageParams {
        limit: filter.limit,
        cursor: filter.cursor.clone(),
    }
    .parse()?;
    let mut conn = state.pool.acquire().await?;
    fetch(&mut conn, &principal, id, false).await?;
    let mut q: QueryBuilder<'_, Postgres> = QueryBuilder::new(format!(
        "select a.der_id, a.gateway_id, a.organization_id, a.command_id, a.command_kind,
                a.command_value_kw, a.committed_kw::float8 as committed_kw,
                a.allocated_kw::float8 as allocated_kw, {STATUS_SQL} as status, c.reason,
                a.command_sent_at, c.delivered_at, c.acked_at, a.release_sent_at, a.release_reason
         {FROM} where a.event_id = "
    ));
    q.push_bind(id);
    if let Some(org) = principal.scope() {
        q.push(" and a.organization_id = ").push_bind(org);
    }
    if let Some(org) = filter.organization_id {
        q.push(" and a.organization_id = ").push_bind(org);
    }
    if let Some(gateway) = filter.gateway_id {
        q.push(" and a.gateway_id = ").push_bind(gateway);
    }
    if let Some(status) = filter.status {
        q.push(format!(" and {STATUS_SQL} = "))
            .push_bind(status.as_str());
    }
    if let Some(after) = page.after {
        q.push(" and a.der_id > ").push_bind(after);
    }
    q.push(" order by a.der_id limit ").push_bind(page.fetch());
    let rows: Vec<CommandRow> = q.build_query_as().fetch_all(&mut *conn).await?;
    let items = rows
        .into_iter()
        .map(CommandOut::try_from)
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(Json(Page::from_rows(items, page, |c| c.der_id)))
}

#[derive(Debug, Default, Serialize, ToSchema)]
pub struct StatusCounts {
    pub pending: i64,
    pub sent: i64,
    pub received: i64,
    pub applied: i64,
    pub rejected: i64,
    pub expired: i64,
    pub opted_out: i64,
    /// Releases put on `der.commands.v1`.
    pub released: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct DispatchStatusOut {
    pub event_id: Uuid,
    pub status: super::DispatchStatus,
    pub target_kw: f64,
    /// Sum of the allocations the caller may see (all of them for the utility).
    pub allocated_kw: f64,
    pub participants: i64,
    pub commands: StatusCounts,
    /// The participating DERs' mean total power in the hour before the start.
    pub baseline_kw: Option<f64>,
    /// Their mean total power since the start (until the end, or now).
    pub during_kw: Option<f64>,
    /// `baseline_kw - during_kw`: what the fleet shed, by this simple before/after
    /// view (settlement uses the program's baseline method instead).
    pub delivered_kw: Option<f64>,
    /// The window `during_kw` covers.
    pub measured_from: Option<DateTime<Utc>>,
    pub measured_to: Option<DateTime<Utc>>,
}

/// Live view of an event: command counts per status, allocated against target, and
/// the participating DERs' telemetry during the event against the hour before it.
#[utoipa::path(
    get, path = "/v1/dispatch-events/{id}/status", operation_id = "dispatch_event.status", tag = "dispatch-events",
    params(("id" = Uuid, Path, description = "Dispatch event id")),
    responses(
        (status = 200, body = DispatchStatusOut),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 401, body = Problem, content_type = "application/problem+json"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
    )
)]
pub async fn status(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<Uuid>,
) -> ApiResult<Json<DispatchStatusOut>> {
    let mut conn = state.pool.acquire().await?;
    let event = fetch(&mut conn, &principal, id, false).await?;
    let scope = principal.scope();
    let counts: Vec<(String, i64)> = sqlx::query_as(&format!(
        "select {STATUS_SQL} as status, count(*) {FROM}
          where a.event_id = $1 and ($2::uuid is null or a.organization_id = $2)
          group by 1"
    ))
    .bind(id)
    .bind(scope)
    .fetch_all(&mut *conn)
    .await?;
    let (allocated_kw, participants, released): (f64, i64, i64) = sqlx::query_as(
        "select coalesce(sum(allocated_kw), 0)::float8, count(*), count(release_sent_at)
           from pm.dispatch_allocation
          where event_id = $1 and ($2::uuid is null or organization_id = $2)",
    )
    .bind(id)
    .bind(scope)
    .fetch_one(&mut *conn)
    .await?;
    let mut commands = StatusCounts {
        released,
        ..StatusCounts::default()
    };
    for (status, n) in counts {
        let slot = match CommandStatus::parse(&status) {
            Some(CommandStatus::Pending) => &mut commands.pending,
            Some(CommandStatus::Sent) => &mut commands.sent,
            Some(CommandStatus::Received) => &mut commands.received,
            Some(CommandStatus::Applied) => &mut commands.applied,
            Some(CommandStatus::Rejected) => &mut commands.rejected,
            Some(CommandStatus::Expired) => &mut commands.expired,
            Some(CommandStatus::OptedOut) => &mut commands.opted_out,
            None => return Err(ApiError::Internal(anyhow::anyhow!("status `{status}`"))),
        };
        *slot += n;
    }
    let (mut baseline_kw, mut during_kw, mut measured_from, mut measured_to) =
        (None, None, None, None);
    if let Some(started) = event.started_at {
        let to = event
            .completed_at
            .unwrap_or_else(Utc::now)
            .min(event.ends_at);
        let fleet = |from: DateTime<Utc>, to: DateTime<Utc>| {
            sqlx::query_scalar::<_, Option<f64>>(
                "select sum(avg_kw) from (
                     select t.der_id, sum(t.sum_kw) / sum(t.samples) as avg_kw
                       from pm.telemetry_1m t
                      where t.der_id in (select der_id from pm.dispatch_allocation
                                          where event_id = $1 and command_sent_at is not null
                                            and ($2::uuid is null or organization_id = $2))
                        and t.bucket >= $3 and t.bucket < $4
                      group by t.der_id) per_der",
            )
            .bind(id)
            .bind(scope)
            .bind(from)
            .bind(to)
        };
        baseline_kw = fleet(started - Duration::hours(1), started)
            .fetch_one(&mut *conn)
            .await?;
        if to > started {
            during_kw = fleet(started, to).fetch_one(&mut *conn).await?;
            measured_from = Some(started);
            measured_to = Some(to);
        }
    }
    Ok(Json(DispatchStatusOut {
        event_id: id,
        status: event.status,
        target_kw: event.target_kw,
        allocated_kw,
        participants,
        commands,
        delivered_kw: baseline_kw.zip(during_kw).map(|(b, d)| b - d),
        baseline_kw,
        during_kw,
        measured_from,
        measured_to,
    }))
}
