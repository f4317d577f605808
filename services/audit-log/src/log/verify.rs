//! Verifying the log: rebuild every leaf from its entry, the tree from the leaves,
//! and check each signed checkpoint against it. The same code checks the database
//! (the `verify` endpoint) and an export (the `audit-verify` command). Pure.

use tlog_tiles::Hash;

use super::{
    leaf::Entry,
    note::{self, NoteError},
    tree::Memory,
};

/// What a verification found.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Report {
    /// No problem found.
    pub ok: bool,
    /// Leaves read.
    pub tree_size: u64,
    pub entries_checked: u64,
    pub checkpoints_checked: u64,
    /// The first position whose entry, leaf or tree hash is not what it should be.
    pub first_bad_index: Option<u64>,
    /// What is wrong, first problems first (at most [`MAX_PROBLEMS`]).
    pub problems: Vec<String>,
}

pub const MAX_PROBLEMS: usize = 100;

/// Feeds the log in order; see [`Verifier::finish`].
#[derive(Debug)]
pub struct Verifier {
    tree: Memory,
    verifier_key: String,
    /// The tree can no longer be rebuilt past a missing position.
    broken_at: Option<u64>,
    entries: u64,
    checkpoints: u64,
    first_bad: Option<u64>,
    /// The lowest mismatching stored subtree: (level, its first position). A leaf
    /// level problem names the position better; this only counts without one.
    subtree_bad: Option<(u8, u64)>,
    problems: Vec<String>,
}

impl Verifier {
    pub fn new(verifier_key: &str) -> Self {
        Self {
            tree: Memory::default(),
            verifier_key: verifier_key.to_owned(),
            broken_at: None,
            entries: 0,
            checkpoints: 0,
            first_bad: None,
            subtree_bad: None,
            problems: Vec::new(),
        }
    }

    fn bad(&mut self, index: Option<u64>, problem: String) {
        if let Some(i) = index {
            self.first_bad = Some(self.first_bad.map_or(i, |f| f.min(i)));
        }
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(problem);
        }
    }

    /// The next leaf: the position it is stored at, the hash recorded for it (if the
    /// source has one), and its entry (`None` when the entry is gone).
    pub fn leaf(&mut self, index: u64, recorded: Option<Hash>, entry: Option<&Entry>) {
        let expected = self.tree.size;
        if self.broken_at.is_some() {
            return;
        }
        if index != expected {
            self.bad(
                Some(expected),
                format!(
                    "position {expected} is missing: the next leaf is at {index} (deleted or moved)"
                ),
            );
            self.broken_at = Some(expected);
            return;
        }
        let hash = match entry {
            Some(e) => {
                self.entries += 1;
                let rebuilt = Entry { index, ..e.clone() }.leaf_hash();
                if e.index != index {
                    self.bad(
                        Some(index),
                        format!("the entry at position {index} says it is at {}", e.index),
                    );
                }
                if recorded.is_some_and(|r| r != rebuilt) {
                    self.bad(
                        Some(index),
                        format!("the entry at position {index} does not match its recorded leaf (edited or swapped)"),
                    );
                }
                rebuilt
            }
            None => {
                self.bad(
                    Some(index),
                    format!("the entry at position {index} is gone (deleted)"),
                );
                match recorded {
                    Some(r) => r,
                    None => {
                        self.broken_at = Some(index);
                        return;
                    }
                }
            }
        };
        if self.tree.push(hash).is_err() {
            self.broken_at = Some(index);
        }
    }

    /// An entry the source holds but the log never committed to.
    pub fn unlogged(&mut self, what: String) {
        let at = self.tree.size;
        self.bad(
            Some(at),
            format!("{what} is not in the log (inserted outside it)"),
        );
    }

    /// A stored tree hash, to compare with the rebuilt one.
    pub fn stored_hash(&mut self, stored_index: u64, hash: Hash) {
        if let Some(rebuilt) = self.tree.hashes.get(&stored_index)
            && *rebuilt != hash
        {
            let (level, n) = tlog_tiles::split_stored_hash_index(stored_index);
            let first = n << level;
            self.subtree_bad = Some(
                self.subtree_bad
                    .map_or((level, first), |b| b.min((level, first))),
            );
            self.bad(
                None,
                format!(
                    "the stored hash of leaves {first}..{} does not match them",
                    (n + 1) << level
                ),
            );
        }
    }

    /// A signed checkpoint, checked against the key and the rebuilt tree.
    pub fn checkpoint(&mut self, signed_note: &str) {
        self.checkpoints += 1;
        let head = match note::open(signed_note, &self.verifier_key) {
            Ok(head) => head,
            Err(e @ (NoteError::Signature | NoteError::Key | NoteError::Origin(..))) => {
                self.bad(None, format!("a checkpoint is refused: {e}"));
                return;
            }
            Err(e) => {
                self.bad(None, format!("a checkpoint is unreadable: {e}"));
                return;
            }
        };
        let size = self.tree.size;
        if head.size > size {
            self.bad(
                Some(size),
                format!(
                    "checkpoint {} was signed, but the log has {size} leaves (cut short)",
                    head.size
                ),
            );
            return;
        }
        if self.broken_at.is_some_and(|b| b < head.size) {
            return;
        }
        match self.tree.root_at(head.size) {
            Ok(root) if root == head.root => {}
            _ => self.bad(
                None,
                format!(
                    "the entries do not rebuild the root signed in checkpoint {}",
                    head.size
                ),
            ),
        }
    }

    pub fn finish(self) -> Report {
        Report {
            ok: self.problems.is_empty(),
            tree_size: self.tree.size,
            entries_checked: self.entries,
            checkpoints_checked: self.checkpoints,
            first_bad_index: self.first_bad.or(self.subtree_bad.map(|(_, first)| first)),
            problems: self.problems,
        }
    }

    /// Leaves rebuilt so far.
    pub fn size(&self) -> u64 {
        self.tree.size
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::note::CheckpointSigner;

    fn entries(n: u64) -> Vec<Entry> {
        (0..n)
            .map(|i| Entry {
                index: i,
                event_id: uuid::Uuid::from_u128(u128::from(i) + 1),
                event_type: "pmcore.program.created.v1".into(),
                source: "api".into(),
                subject: format!("s-{i}"),
                principal: Some("client:x".into()),
                organization_id: None,
                occurred_at: "2026-07-01T17:00:00Z".parse().expect("time"),
                recorded_at: "2026-07-01T17:00:01Z".parse().expect("time"),
                topic: "pm.programs.v1".into(),
                payload: serde_json::json!({"n": i}),
            })
            .collect()
    }

    /// A log of `n` entries with checkpoints at 5 and at `n`.
    fn log(n: u64) -> (CheckpointSigner, Vec<Entry>, Vec<String>) {
        let (_, signer) = CheckpointSigner::generate("audit.test/log").expect("key");
        let es = entries(n);
        let mut tree = Memory::default();
        for e in &es {
            tree.push(e.leaf_hash()).expect("push");
        }
        let notes = [5, n]
            .iter()
            .map(|s| {
                signer
                    .sign(*s, tree.root_at(*s).expect("root"))
                    .expect("sign")
            })
            .collect();
        (signer, es, notes)
    }

    fn check(
        signer: &CheckpointSigner,
        es: &[Entry],
        recorded: &[Hash],
        notes: &[String],
    ) -> Report {
        let mut v = Verifier::new(signer.verifier_key());
        for (i, e) in es.iter().enumerate() {
            v.leaf(e.index, recorded.get(i).copied(), Some(e));
        }
        for n in notes {
            v.checkpoint(n);
        }
        v.finish()
    }

    #[test]
    fn an_untouched_log_verifies() {
        let (signer, es, notes) = log(12);
        let recorded: Vec<Hash> = es.iter().map(Entry::leaf_hash).collect();
        let report = check(&signer, &es, &recorded, &notes);
        assert!(report.ok, "{report:?}");
        assert_eq!((report.tree_size, report.checkpoints_checked), (12, 2));
    }

    #[test]
    fn each_kind_of_tampering_is_found_at_its_first_bad_position() {
        let (signer, es, notes) = log(12);
        let recorded: Vec<Hash> = es.iter().map(Entry::leaf_hash).collect();

        let mut edited = es.clone();
        edited[7].payload = serde_json::json!({"n": 700});
        let r = check(&signer, &edited, &recorded, &notes);
        assert_eq!(r.first_bad_index, Some(7), "{r:?}");

        // Edited with its recorded leaf too: only the signed root tells, after 5.
        let mut both = recorded.clone();
        both[7] = edited[7].leaf_hash();
        let r = check(&signer, &edited, &both, &notes);
        assert!(
            !r.ok && r.problems.iter().any(|p| p.contains("checkpoint 12")),
            "{r:?}"
        );

        let mut swapped = es.clone();
        swapped.swap(3, 4);
        let (a, b) = (swapped[3].index, swapped[4].index);
        swapped[3].index = b;
        swapped[4].index = a;
        let r = check(&signer, &swapped, &recorded, &notes);
        assert_eq!(r.first_bad_index, Some(3), "{r:?}");

        let mut deleted = es.clone();
        deleted.remove(9);
        let mut rec = recorded.clone();
        rec.remove(9);
        let r = check(&signer, &deleted, &rec, &notes);
        assert_eq!(r.first_bad_index, Some(9), "{r:?}");

        let r = check(&signer, &es[..10], &recorded[..10], &notes);
        assert_eq!(r.first_bad_index, Some(10), "cut short: {r:?}");

        let mut v = Verifier::new(signer.verifier_key());
        for (e, h) in es.iter().zip(&recorded) {
            v.leaf(e.index, Some(*h), Some(e));
        }
        v.unlogged("entry seq 99".into());
        let r = v.finish();
        assert_eq!(r.first_bad_index, Some(12), "{r:?}");

        // Only an interior stored hash altered: the smallest such subtree is named.
        let mut tree = Memory::default();
        for e in &es {
            tree.push(e.leaf_hash()).expect("push");
        }
        let mut v = Verifier::new(signer.verifier_key());
        for (e, h) in es.iter().zip(&recorded) {
            v.leaf(e.index, Some(*h), Some(e));
        }
        for (index, hash) in &tree.hashes {
            let (level, n) = tlog_tiles::split_stored_hash_index(*index);
            let forged = (level == 1 && n == 3) || (level == 3 && n == 0);
            v.stored_hash(*index, if forged { Hash([9; 32]) } else { *hash });
        }
        let r = v.finish();
        assert_eq!(r.first_bad_index, Some(6), "leaves 6..8 at level 1: {r:?}");
    }

    #[test]
    fn checkpoints_signed_by_another_key_or_with_a_forged_root_are_refused() {
        let (signer, es, notes) = log(12);
        let recorded: Vec<Hash> = es.iter().map(Entry::leaf_hash).collect();
        let (_, other) = CheckpointSigner::generate("audit.test/log").expect("key");
        let foreign = other.sign(12, Hash([7; 32])).expect("sign");
        let r = check(&signer, &es, &recorded, &[foreign]);
        assert!(!r.ok && r.problems[0].contains("refused"), "{r:?}");
        let forged = signer.sign(12, Hash([7; 32])).expect("sign");
        let r = check(&signer, &es, &recorded, &[forged]);
        assert!(
            !r.ok && r.problems[0].contains("do not rebuild the root"),
            "{r:?}"
        );
        let _ = notes;
    }
}
