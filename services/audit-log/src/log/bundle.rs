//! An export of the log (JSON Lines) and its offline check. The first line is a
//! [`Header`] naming the signed checkpoint; every other line is an entry with its leaf
//! hash and its inclusion proof in that checkpoint. Checking needs only the file and
//! the log's verifier key. Pure.

use base64::Engine;
use serde::{Deserialize, Serialize};
use tlog_tiles::Hash;

use super::{leaf::Entry, note, tree, verify::Report};

pub const FORMAT: &str = "pmcore-audit-export/v1";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    pub format: String,
    /// The signed checkpoint the proofs lead to (C2SP signed note).
    pub checkpoint: String,
    pub tree_size: u64,
    /// Positions `from..to`.
    pub from: u64,
    pub to: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub entry: Entry,
    /// base64 SHA-256(0x00 ‖ leaf).
    pub leaf_hash: String,
    /// The audit path to the checkpoint's root, base64.
    pub proof: Vec<String>,
}

pub fn b64(h: &Hash) -> String {
    base64::engine::general_purpose::STANDARD.encode(h.0)
}

pub fn unb64(s: &str) -> Option<Hash> {
    let bytes = base64::engine::general_purpose::STANDARD.decode(s).ok()?;
    Some(Hash(bytes.try_into().ok()?))
}

/// Checks an export against the log's verifier key: the checkpoint's signature, every
/// entry's leaf and its proof, and that no position is missing.
pub fn check(text: &str, verifier_key: &str) -> Report {
    check_lines(text.lines(), verifier_key)
}

/// [`check`] over the export's lines as they are read, so a file of any size is
/// checked in constant memory.
pub fn check_lines<S: AsRef<str>>(
    lines: impl IntoIterator<Item = S>,
    verifier_key: &str,
) -> Report {
    let mut problems = Vec::new();
    let mut first_bad: Option<u64> = None;
    let mut bad = |at: Option<u64>, p: String, problems: &mut Vec<String>| {
        if let Some(i) = at {
            first_bad = Some(first_bad.map_or(i, |f| f.min(i)));
        }
        if problems.len() < super::verify::MAX_PROBLEMS {
            problems.push(p);
        }
    };
    let mut lines = lines.into_iter();
    let header: Option<Header> = lines
        .next()
        .and_then(|l| serde_json::from_str(l.as_ref()).ok());
    let Some(header) = header.filter(|h| h.format == FORMAT) else {
        return report(
            0,
            0,
            0,
            None,
            vec![format!("the first line is not a {FORMAT} header")],
        );
    };
    let head = match note::open(&header.checkpoint, verifier_key) {
        Ok(head) if head.size == header.tree_size => head,
        Ok(head) => {
            return report(
                0,
                0,
                1,
                None,
                vec![format!(
                    "the header says tree size {} but its checkpoint signs {}",
                    header.tree_size, head.size
                )],
            );
        }
        Err(e) => {
            return report(
                0,
                0,
                1,
                None,
                vec![format!("the checkpoint is refused: {e}")],
            );
        }
    };
    let mut expected = header.from;
    let mut entries = 0;
    for (n, text) in lines.enumerate() {
        let Ok(line) = serde_json::from_str::<Line>(text.as_ref()) else {
            bad(
                Some(expected),
                format!("line {} is not an export entry", n + 2),
                &mut problems,
            );
            continue;
        };
        let index = line.entry.index;
        if index != expected {
            bad(
                Some(expected.min(index)),
                format!("position {expected} is missing (the next line is {index})"),
                &mut problems,
            );
        }
        expected = index + 1;
        entries += 1;
        let rebuilt = line.entry.leaf_hash();
        if unb64(&line.leaf_hash) != Some(rebuilt) {
            bad(
                Some(index),
                format!("the entry at position {index} does not match its leaf hash (edited)"),
                &mut problems,
            );
        }
        let proof: Option<Vec<Hash>> = line.proof.iter().map(|p| unb64(p)).collect();
        let proven = proof.is_some_and(|p| {
            index < head.size
                && tree::check_record(&p, head.size, head.root, index, rebuilt).is_ok()
        });
        if !proven {
            bad(
                Some(index),
                format!(
                    "the entry at position {index} is not in the signed tree of {} leaves",
                    head.size
                ),
                &mut problems,
            );
        }
    }
    if expected < header.to {
        bad(
            Some(expected),
            format!(
                "the export ends at {expected}, its header says {}",
                header.to
            ),
            &mut problems,
        );
    }
    report(
        expected.saturating_sub(header.from),
        entries,
        1,
        first_bad,
        problems,
    )
}

fn report(
    size: u64,
    entries: u64,
    checkpoints: u64,
    first_bad: Option<u64>,
    problems: Vec<String>,
) -> Report {
    Report {
        ok: problems.is_empty(),
        tree_size: size,
        entries_checked: entries,
        checkpoints_checked: checkpoints,
        first_bad_index: first_bad,
        problems,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{note::CheckpointSigner, tree::Memory};

    fn export(n: u64, from: u64, to: u64) -> (CheckpointSigner, String) {
        let (_, signer) = CheckpointSigner::generate("audit.test/log").expect("key");
        let entries: Vec<Entry> = (0..n)
            .map(|i| Entry {
                index: i,
                event_id: uuid::Uuid::from_u128(u128::from(i) + 1),
                event_type: "pmcore.der.registered.v1".into(),
                source: "api".into(),
                subject: format!("der-{i}"),
                principal: None,
                organization_id: None,
                occurred_at: "2026-07-01T17:00:00Z".parse().expect("time"),
                recorded_at: "2026-07-01T17:00:00Z".parse().expect("time"),
                topic: "pm.ders.v1".into(),
                payload: serde_json::json!({"nameplate_kw": 5.5}),
            })
            .collect();
        let mut tree = Memory::default();
        for e in &entries {
            tree.push(e.leaf_hash()).expect("push");
        }
        let note = signer
            .sign(n, tree.root_at(n).expect("root"))
            .expect("sign");
        let mut out = serde_json::to_string(&Header {
            format: FORMAT.into(),
            checkpoint: note,
            tree_size: n,
            from,
            to,
        })
        .expect("json")
            + "\n";
        for e in &entries[from as usize..to as usize] {
            let proof = tree::inclusion(n, e.index, &tree.hashes).expect("proof");
            out += &serde_json::to_string(&Line {
                entry: e.clone(),
                leaf_hash: b64(&e.leaf_hash()),
                proof: proof.iter().map(b64).collect(),
            })
            .expect("json");
            out += "\n";
        }
        (signer, out)
    }

    #[test]
    fn an_untouched_export_checks_and_each_tampering_is_named() {
        let (signer, text) = export(20, 4, 15);
        let key = signer.verifier_key();
        let r = check(&text, key);
        assert!(r.ok, "{r:?}");
        assert_eq!(r.entries_checked, 11);

        let lines: Vec<&str> = text.lines().collect();
        // An edited entry whose leaf hash was recomputed too: the proof fails.
        let mut line: Line = serde_json::from_str(lines[4]).expect("line");
        line.entry.payload = serde_json::json!({"nameplate_kw": 50.5});
        line.leaf_hash = b64(&line.entry.leaf_hash());
        let mut edited = lines.clone();
        let forged = serde_json::to_string(&line).expect("json");
        edited[4] = &forged;
        let r = check(&(edited.join("\n") + "\n"), key);
        assert_eq!(r.first_bad_index, Some(7), "{r:?}");

        let mut dropped = lines.clone();
        dropped.remove(6);
        let r = check(&(dropped.join("\n") + "\n"), key);
        assert_eq!(r.first_bad_index, Some(9), "{r:?}");

        let r = check(&(lines[..8].join("\n") + "\n"), key);
        assert_eq!(r.first_bad_index, Some(11), "cut short: {r:?}");

        let (other, _) = export(20, 4, 15);
        let r = check(&text, other.verifier_key());
        assert!(!r.ok && r.problems[0].contains("refused"), "{r:?}");
    }
}
