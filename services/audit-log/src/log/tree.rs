//! The Merkle tree over the leaves, as `tlog_tiles` (a port of Go's
//! `golang.org/x/mod/sumdb/tlog`, RFC 6962 hashing) defines it: every complete
//! subtree's hash is stored once, at its "stored hash index", and roots and proofs
//! are computed from at most a few dozen of them. Pure: the caller fetches the
//! stored hashes a computation reads (they depend only on the sizes and positions,
//! never on hash values), which is how the database serves them in one query.

use std::{
    cell::RefCell,
    collections::{BTreeSet, HashMap},
};

use tlog_tiles::{Hash, HashReader};

pub use tlog_tiles::{EMPTY_HASH, check_record, check_tree, record_hash};

/// Stored hashes by index.
pub type Hashes = HashMap<u64, Hash>;

/// A reader that remembers what was asked and answers zeros: the first pass of a
/// computation, to learn which stored hashes it needs.
#[derive(Debug, Default)]
struct Wants(RefCell<BTreeSet<u64>>);

impl HashReader for Wants {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        self.0.borrow_mut().extend(indexes.iter().copied());
        Ok(vec![Hash([0; 32]); indexes.len()])
    }
}

/// Answers from a map; a missing hash is an error, never a guess.
#[derive(Debug)]
struct Known<'a>(&'a Hashes);

impl HashReader for Known<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|i| {
                self.0
                    .get(i)
                    .copied()
                    .ok_or(tlog_tiles::Error::InvalidProof)
            })
            .collect()
    }
}

/// Errors of tree computations.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("the stored tree is missing hash {0} (the tree was cut or never completed)")]
    Missing(u64),
    #[error("tree computation failed: {0}")]
    Tlog(#[from] tlog_tiles::Error),
}

fn missing(wanted: &BTreeSet<u64>, known: &Hashes) -> Result<(), TreeError> {
    match wanted.iter().find(|i| !known.contains_key(i)) {
        Some(i) => Err(TreeError::Missing(*i)),
        None => Ok(()),
    }
}

/// The stored hashes appending at position `n` reads (all from before `n`).
pub fn append_reads(n: u64, count: u64) -> BTreeSet<u64> {
    let wants = Wants::default();
    for m in n..n + count {
        let _ = tlog_tiles::stored_hashes_for_record_hash(m, Hash([0; 32]), &wants);
    }
    let first_new = tlog_tiles::stored_hash_index(0, n);
    wants
        .0
        .into_inner()
        .into_iter()
        .filter(|i| *i < first_new)
        .collect()
}

/// Appends `leaves` at positions `n..`: returns the stored hashes to write, by
/// index. `known` must hold [`append_reads`]`(n, leaves.len())`; it gains the new ones.
pub fn append(n: u64, leaves: &[Hash], known: &mut Hashes) -> Result<Vec<(u64, Hash)>, TreeError> {
    let mut out = Vec::with_capacity(leaves.len() * 2);
    for (offset, leaf) in leaves.iter().enumerate() {
        let m = n + offset as u64;
        let new = tlog_tiles::stored_hashes_for_record_hash(m, *leaf, &Known(known))?;
        let first = tlog_tiles::stored_hash_index(0, m);
        for (k, h) in new.into_iter().enumerate() {
            known.insert(first + k as u64, h);
            out.push((first + k as u64, h));
        }
    }
    Ok(out)
}

/// The stored hashes the root of a tree of `size` leaves reads.
pub fn root_reads(size: u64) -> BTreeSet<u64> {
    let wants = Wants::default();
    let _ = tlog_tiles::tree_hash(size, &wants);
    wants.0.into_inner()
}

pub fn root(size: u64, known: &Hashes) -> Result<Hash, TreeError> {
    missing(&root_reads(size), known)?;
    Ok(tlog_tiles::tree_hash(size, &Known(known))?)
}

/// The stored hashes the inclusion proof of leaf `index` in a tree of `size` reads.
pub fn inclusion_reads(size: u64, index: u64) -> BTreeSet<u64> {
    let wants = Wants::default();
    let _ = tlog_tiles::prove_record(size, index, &wants);
    wants.0.into_inner()
}

/// RFC 6962 audit path of leaf `index` in the tree of `size` leaves.
pub fn inclusion(size: u64, index: u64, known: &Hashes) -> Result<Vec<Hash>, TreeError> {
    missing(&inclusion_reads(size, index), known)?;
    Ok(tlog_tiles::prove_record(size, index, &Known(known))?)
}

/// The stored hashes the consistency proof from `from` to `to` leaves reads.
pub fn consistency_reads(to: u64, from: u64) -> BTreeSet<u64> {
    let wants = Wants::default();
    let _ = tlog_tiles::prove_tree(to, from, &wants);
    wants.0.into_inner()
}

/// RFC 6962 consistency proof that the tree of `to` leaves extends the one of `from`.
pub fn consistency(to: u64, from: u64, known: &Hashes) -> Result<Vec<Hash>, TreeError> {
    missing(&consistency_reads(to, from), known)?;
    Ok(tlog_tiles::prove_tree(to, from, &Known(known))?)
}

/// A whole tree in memory, for verifying an export offline.
#[derive(Debug, Default)]
pub struct Memory {
    pub size: u64,
    pub hashes: Hashes,
}

impl Memory {
    pub fn push(&mut self, leaf: Hash) -> Result<(), TreeError> {
        append(self.size, &[leaf], &mut self.hashes)?;
        self.size += 1;
        Ok(())
    }

    pub fn root_at(&self, size: u64) -> Result<Hash, TreeError> {
        root(size, &self.hashes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6962 reference leaves and roots (transparency-dev/merkle's test data).
    const LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    fn hash(s: &str) -> Hash {
        Hash(unhex(s).try_into().expect("32 bytes"))
    }

    fn reference() -> Memory {
        let mut tree = Memory::default();
        for leaf in LEAVES {
            tree.push(record_hash(&unhex(leaf))).expect("append");
        }
        tree
    }

    #[test]
    fn roots_match_rfc_6962_for_every_size() {
        let tree = reference();
        assert_eq!(tree.root_at(0).expect("root"), EMPTY_HASH);
        for (size, want) in ROOTS.iter().enumerate() {
            assert_eq!(
                tree.root_at(size as u64 + 1).expect("root"),
                hash(want),
                "size {}",
                size + 1
            );
        }
    }

    #[test]
    fn inclusion_proofs_match_the_reference_and_check() {
        let tree = reference();
        for (index, path) in [
            (
                0,
                [
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                [
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
        ] {
            let proof = inclusion(8, index, &tree.hashes).expect("proof");
            assert_eq!(proof, path.map(hash).to_vec(), "leaf {index}");
            let leaf = record_hash(&unhex(LEAVES[index as usize]));
            check_record(&proof, 8, hash(ROOTS[7]), index, leaf).expect("checks");
            assert!(check_record(&proof, 8, hash(ROOTS[7]), index ^ 1, leaf).is_err());
            assert!(check_record(&proof, 8, hash(ROOTS[6]), index, leaf).is_err());
        }
    }

    #[test]
    fn consistency_proofs_match_the_reference_and_check() {
        let tree = reference();
        for (from, to, path) in [
            (
                2u64,
                8u64,
                vec![
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                2,
                5,
                vec![
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ] {
            let proof = consistency(to, from, &tree.hashes).expect("proof");
            let want: Vec<Hash> = path.into_iter().map(hash).collect();
            assert_eq!(proof, want, "{from} -> {to}");
            let (old, new) = (hash(ROOTS[from as usize - 1]), hash(ROOTS[to as usize - 1]));
            check_tree(&proof, to, new, from, old).expect("checks");
            assert!(check_tree(&proof, to, new, from, hash(ROOTS[0])).is_err());
        }
    }

    #[test]
    fn appending_in_batches_stores_what_one_at_a_time_stores() {
        let leaves: Vec<Hash> = (0..300u32).map(|i| record_hash(&i.to_be_bytes())).collect();
        let mut one = Memory::default();
        for l in &leaves {
            one.push(*l).expect("append");
        }
        let mut known = Hashes::new();
        let mut n = 0u64;
        for chunk in [7usize, 1, 64, 100, 128] {
            let part = &leaves[n as usize..n as usize + chunk];
            // Only what append_reads names is given, as the database would.
            let mut given: Hashes = append_reads(n, chunk as u64)
                .into_iter()
                .map(|i| (i, known[&i]))
                .collect();
            for (i, h) in append(n, part, &mut given).expect("append") {
                known.insert(i, h);
            }
            n += chunk as u64;
        }
        assert_eq!(known, one.hashes);
        assert_eq!(
            root(300, &known).expect("root"),
            one.root_at(300).expect("root")
        );
    }

    #[test]
    fn a_missing_stored_hash_is_an_error_not_a_wrong_root() {
        let mut tree = reference();
        let wanted = *root_reads(8).iter().next().expect("one");
        tree.hashes.remove(&wanted);
        assert!(matches!(tree.root_at(8), Err(TreeError::Missing(i)) if i == wanted));
    }
}
