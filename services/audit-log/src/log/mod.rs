//! The transparency log: leaves, the Merkle tree and signed checkpoints. Pure; the
//! service stores and serves them.

pub mod bundle;
pub mod leaf;
pub mod note;
pub mod tree;
pub mod verify;
