//! Enrollment eligibility: each `pmcore.enrollment.requested.v1` is checked against the
//! program's rules, then approved (active at once if the program runs) or rejected
//! with the reasons, and the outcome is published.

use async_trait::async_trait;
use chrono::Utc;
use pmcore_events::domain::{EnrollmentRequested, EnrollmentStatusChanged};
use pmcore_kafka::{
    consumer::{Handler, HandlerError, Incoming},
    outbox::{self, EventMeta},
};
use serde::Serialize;
use sqlx::{FromRow, PgConnection};
use uuid::Uuid;

pub const CONSUMER_GROUP: &str = "pmcore-worker-eligibility";
const DECIDER: &str = "worker:eligibility";

#[derive(Debug, Clone, Copy)]
pub struct Eligibility;

#[derive(FromRow)]
struct Facts {
    status: String,
    committed_kw: f64,
    program_status: String,
    eligible_der_types: Vec<String>,
    min_nameplate_kw: f64,
    eligible_feeders: Vec<String>,
    der_status: String,
    der_type: String,
    nameplate_kw: f64,
    feeder: Option<String>,
    gateway_id: Option<Uuid>,
}

/// One rule's verdict, kept on the enrollment for people to read.
#[derive(Debug, Serialize, PartialEq)]
struct Check {
    rule: &'static str,
    passed: bool,
    detail: String,
}

fn checks(f: &Facts) -> Vec<Check> {
    let check = |rule, passed, detail: String| Check {
        rule,
        passed,
        detail,
    };
    let types = if f.eligible_der_types.is_empty() {
        "any type".to_owned()
    } else {
        f.eligible_der_types.join(", ")
    };
    let feeder = f.feeder.clone().unwrap_or_else(|| "none".to_owned());
    vec![
        check(
            "program_open",
            f.program_status == "open" || f.program_status == "active",
            format!("the program is {}", f.program_status),
        ),
        check(
            "der_in_service",
            f.der_status == "active",
            format!("the DER is {}", f.der_status),
        ),
        check(
            "der_type",
            f.eligible_der_types.is_empty() || f.eligible_der_types.contains(&f.der_type),
            format!("{} (eligible: {types})", f.der_type),
        ),
        check(
            "min_nameplate",
            f.nameplate_kw >= f.min_nameplate_kw,
            format!(
                "nameplate {} kW, minimum {} kW",
                f.nameplate_kw, f.min_nameplate_kw
            ),
        ),
        check(
            "feeder",
            f.eligible_feeders.is_empty()
                || f.feeder
                    .as_ref()
                    .is_some_and(|x| f.eligible_feeders.contains(x)),
            format!("feeder {feeder}"),
        ),
        check(
            "gateway_assigned",
            f.gateway_id.is_some(),
            "a gateway must control the DER to receive dispatch commands".to_owned(),
        ),
        check(
            "commitment",
            f.committed_kw <= f.nameplate_kw,
            format!(
                "committed {} kW of {} kW nameplate",
                f.committed_kw, f.nameplate_kw
            ),
        ),
    ]
}

#[async_trait]
impl Handler for Eligibility {
    async fn handle(&self, conn: &mut PgConnection, record: &Incoming) -> Result<(), HandlerError> {
        if record.envelope.ce_type != pmcore_events::catalog::ENROLLMENT_REQUESTED.ce_type {
            return Ok(()); // outcomes travel on the same topic; they need nothing here
        }
        let requested: EnrollmentRequested = record
            .payload
            .clone_typed()
            .map_err(|e| HandlerError::Permanent(e.into()))?;
        let id = Uuid::parse_str(&requested.enrollment_id)
            .map_err(|e| HandlerError::Permanent(e.into()))?;
        let facts: Option<Facts> = sqlx::query_as(
            "select e.status, e.committed_kw::float8 as committed_kw, p.status as program_status,
                    p.eligible_der_types, p.min_nameplate_kw::float8 as min_nameplate_kw,
                    p.eligible_feeders, d.status as der_status, d.der_type,
                    d.nameplate_kw::float8 as nameplate_kw, d.feeder, d.gateway_id
               from pm.enrollment e
               join pm.program p on p.id = e.program_id
               join pm.der d on d.id = e.der_id
              where e.id = $1
              for update of e",
        )
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
        let Some(facts) = facts else {
            return Err(HandlerError::Permanent(anyhow::anyhow!(
                "enrollment {id} does not exist"
            )));
        };
        if facts.status != "requested" {
            // A program manager decided first; their decision stands.
            return Ok(());
        }
        let results = checks(&facts);
        let failed: Vec<&Check> = results.iter().filter(|c| !c.passed).collect();
        let (to, reason) = if failed.is_empty() {
            let to = if facts.program_status == "active" {
                "active"
            } else {
                "approved"
            };
            (to, None)
        } else {
            let why = failed
                .iter()
                .map(|c| format!("{}: {}", c.rule, c.detail))
                .collect::<Vec<_>>()
                .join("; ");
            ("rejected", Some(why))
        };
        let now = Utc::now();
        sqlx::query(
            "update pm.enrollment set status = $2, reason = $3, eligibility = $4, decided_by = $5,
                    updated_at = $6
              where id = $1",
        )
        .bind(id)
        .bind(to)
        .bind(&reason)
        .bind(serde_json::json!({ "checks": results }))
        .bind(DECIDER)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        let event = EnrollmentStatusChanged {
            enrollment_id: requested.enrollment_id.clone(),
            program_id: requested.program_id.clone(),
            der_id: requested.der_id.clone(),
            organization_id: requested.organization_id.clone(),
            from_status: "requested".to_owned(),
            to_status: to.to_owned(),
            reason,
            decided_by: DECIDER.to_owned(),
            changed_at: now.timestamp_micros(),
        };
        let meta = EventMeta {
            source: "worker".to_owned(),
            principal: Some("service:worker".to_owned()),
            traceparent: None,
        };
        outbox::enqueue(conn, &event, &meta)
            .await
            .map_err(HandlerError::classify_any)?;
        metrics::counter!("pmcore_worker_eligibility_decisions_total", "outcome" => to)
            .increment(1);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        Facts {
            status: "requested".into(),
            committed_kw: 4.0,
            program_status: "open".into(),
            eligible_der_types: vec!["battery".into()],
            min_nameplate_kw: 2.0,
            eligible_feeders: vec![],
            der_status: "active".into(),
            der_type: "battery".into(),
            nameplate_kw: 5.0,
            feeder: Some("F-1".into()),
            gateway_id: Some(Uuid::now_v7()),
        }
    }

    fn failed(f: &Facts) -> Vec<&'static str> {
        checks(f)
            .into_iter()
            .filter(|c| !c.passed)
            .map(|c| c.rule)
            .collect()
    }

    #[test]
    fn an_eligible_der_passes_every_rule() {
        assert!(failed(&facts()).is_empty());
    }

    #[test]
    fn each_rule_names_itself_when_it_fails() {
        let mut f = facts();
        f.der_type = "thermostat".into();
        f.nameplate_kw = 1.0;
        f.gateway_id = None;
        f.eligible_feeders = vec!["F-9".into()];
        assert_eq!(
            failed(&f),
            [
                "der_type",
                "min_nameplate",
                "feeder",
                "gateway_assigned",
                "commitment"
            ]
        );
        let mut f = facts();
        f.program_status = "closed".into();
        f.der_status = "decommissioned".into();
        assert_eq!(failed(&f), ["program_open", "der_in_service"]);
    }
}
