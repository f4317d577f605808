//! Exports: a range of the log as JSON Lines, each entry with its leaf hash and its
//! inclusion proof in the checkpoint the export is made against, so an auditor can
//! check it without database access (`audit-tool verify`). The file's first line
//! names the checkpoint.

use sqlx::PgConnection;

use crate::{
    log::{
        bundle::{FORMAT, Header, Line, b64},
        tree,
    },
    store::{self, ENTRY_COLUMNS, EntryRow},
};

/// Writes positions `from..to` against the checkpoint of `tree_size` with `note`.
pub async fn write(
    conn: &mut PgConnection,
    note: &str,
    tree_size: u64,
    from: u64,
    to: u64,
    out: &mut Vec<u8>,
) -> anyhow::Result<u64> {
    let header = Header {
        format: FORMAT.to_owned(),
        checkpoint: note.to_owned(),
        tree_size,
        from,
        to,
    };
    serde_json::to_writer(&mut *out, &header)?;
    out.push(b'\n');
    let mut at = from;
    let mut written = 0;
    while at < to {
        let rows: Vec<EntryRow> = sqlx::query_as(&format!(
            "select {ENTRY_COLUMNS}, l.leaf_index
               from audit.leaf l join audit.entry e on e.seq = l.entry_seq
              where l.leaf_index >= $1 and l.leaf_index < $2 order by l.leaf_index limit 2000"
        ))
        .bind(at as i64)
        .bind(to as i64)
        .fetch_all(&mut *conn)
        .await?;
        let Some(last) = rows.last().and_then(|r| r.leaf_index) else {
            break;
        };
        let mut wanted = std::collections::BTreeSet::new();
        for r in &rows {
            wanted.extend(tree::inclusion_reads(
                tree_size,
                r.leaf_index.unwrap_or(0) as u64,
            ));
        }
        let known = store::hashes(&mut *conn, &wanted).await?;
        for r in rows {
            let index = r.leaf_index.unwrap_or(0) as u64;
            let entry = r.entry(index);
            let proof = tree::inclusion(tree_size, index, &known)?;
            let line = Line {
                leaf_hash: b64(&entry.leaf_hash()),
                entry,
                proof: proof.iter().map(b64).collect(),
            };
            serde_json::to_writer(&mut *out, &line)?;
            out.push(b'\n');
            written += 1;
        }
        at = last as u64 + 1;
    }
    Ok(written)
}
