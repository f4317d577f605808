//! Which organizations a domain event concerns. Never a broadcast: a program's owner
//! and the organizations taking part, a DER's or gateway's or file's owner.

use sqlx::PgConnection;
use uuid::Uuid;

/// A program's owner and every organization with an approved or active enrollment
/// in it (those told before and about an event).
pub async fn program_participants(
    conn: &mut PgConnection,
    program_id: Uuid,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "select organization_id from pm.program where id = $1
         union
         select organization_id from pm.enrollment
          where program_id = $1 and status in ('approved', 'active')",
    )
    .bind(program_id)
    .fetch_all(conn)
    .await
}

/// A program's owner and the organizations whose DERs got commands in an event.
pub async fn event_participants(
    conn: &mut PgConnection,
    program_id: Uuid,
    event_id: Uuid,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "select organization_id from pm.program where id = $1
         union
         select organization_id from pm.dispatch_allocation where event_id = $2",
    )
    .bind(program_id)
    .bind(event_id)
    .fetch_all(conn)
    .await
}

/// A program's owner and the organizations a settlement run pays.
pub async fn settlement_payees(
    conn: &mut PgConnection,
    program_id: Uuid,
    run_id: Uuid,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(
        "select organization_id from pm.program where id = $1
         union
         select organization_id from pm.settlement where run_id = $2",
    )
    .bind(program_id)
    .bind(run_id)
    .fetch_all(conn)
    .await
}

/// A program's name, for the wording of a notification.
pub async fn program_name(conn: &mut PgConnection, program_id: Uuid) -> sqlx::Result<String> {
    let name: Option<String> = sqlx::query_scalar("select name from pm.program where id = $1")
        .bind(program_id)
        .fetch_optional(conn)
        .await?;
    Ok(name.unwrap_or_default())
}
