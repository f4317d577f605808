//! Checkpoints: the tree's size and root in the C2SP `tlog-checkpoint` format, signed
//! as a C2SP `signed-note` with Ed25519 (the formats Certificate Transparency's
//! static logs, Go's checksum database and Sigstore use), so any of their verifiers
//! can check ours. The formats are `tlog_tiles` and `signed_note`'s; this is glue.

use base64::Engine;
use signed_note::{Note, Signer, StandardSigner, StandardVerifier, VerifierList};
use tlog_tiles::{Checkpoint, Hash};

/// Why a note is not a checkpoint of this log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    #[error("the verifier key is malformed")]
    Key,
    #[error("the note is malformed")]
    Malformed,
    #[error("the note is not signed by the log's key (or its signature does not match its text)")]
    Signature,
    #[error("the note's text is not a checkpoint")]
    NotCheckpoint,
    #[error("the checkpoint's origin `{0}` is not the log's `{1}`")]
    Origin(String, String),
}

/// A verified checkpoint's claim.
#[derive(Debug, Clone, PartialEq)]
pub struct Head {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
}

/// Signs checkpoints. The key's name is the log's origin line.
pub struct CheckpointSigner {
    signer: StandardSigner,
    verifier_key: String,
}

impl std::fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("verifier_key", &self.verifier_key)
            .finish_non_exhaustive()
    }
}

const ED25519: u8 = 1;

impl CheckpointSigner {
    /// From a signer key as `signed-note` encodes it:
    /// `PRIVATE+KEY+<name>+<key id>+<base64(0x01 ‖ Ed25519 seed)>`.
    pub fn from_key(skey: &str) -> anyhow::Result<Self> {
        let signer = StandardSigner::new(skey)
            .map_err(|e| anyhow::anyhow!("the checkpoint signing key is not valid: {e}"))?;
        let encoded = skey.splitn(5, '+').nth(4).unwrap_or_default();
        let bytes = base64::engine::general_purpose::STANDARD.decode(encoded)?;
        let seed: [u8; 32] = bytes
            .get(1..)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| anyhow::anyhow!("the checkpoint signing key is not an Ed25519 key"))?;
        let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
        let verifier_key = signed_note::new_ed25519_verifier_key(signer.name(), &public);
        Ok(Self {
            signer,
            verifier_key,
        })
    }

    /// A new random key named `name`; returns the signer key too, to keep.
    pub fn generate(name: &str) -> anyhow::Result<(String, Self)> {
        let seed: [u8; 32] = rand::random();
        let public = ed25519_dalek::SigningKey::from_bytes(&seed).verifying_key();
        let mut with_alg = vec![ED25519];
        with_alg.extend_from_slice(public.as_bytes());
        let id = signed_note::key_id(name, &with_alg);
        let mut private = vec![ED25519];
        private.extend_from_slice(&seed);
        let skey = format!(
            "PRIVATE+KEY+{name}+{id:08x}+{}",
            base64::engine::general_purpose::STANDARD.encode(private)
        );
        let signer = Self::from_key(&skey)?;
        Ok((skey, signer))
    }

    pub fn origin(&self) -> &str {
        self.signer.name()
    }

    pub fn key_id(&self) -> u32 {
        self.signer.key_id()
    }

    /// `<name>+<key id>+<base64(0x01 ‖ public key)>`, what verifiers are given.
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// The signed note of the tree of `size` leaves with `root`.
    pub fn sign(&self, size: u64, root: Hash) -> anyhow::Result<String> {
        let checkpoint = Checkpoint::new(self.origin(), size, root, "")
            .map_err(|e| anyhow::anyhow!("checkpoint: {e}"))?;
        let mut note =
            Note::new(&checkpoint.to_bytes(), &[]).map_err(|e| anyhow::anyhow!("note: {e}"))?;
        note.add_sigs(&[&self.signer])
            .map_err(|e| anyhow::anyhow!("signing: {e}"))?;
        String::from_utf8(note.to_bytes()).map_err(Into::into)
    }
}

/// Checks `note` against `verifier_key` and reads the checkpoint it signs.
pub fn open(note: &str, verifier_key: &str) -> Result<Head, NoteError> {
    let verifier = StandardVerifier::new(verifier_key).map_err(|_| NoteError::Key)?;
    let name = signed_note::Verifier::name(&verifier).to_owned();
    let parsed = Note::from_bytes(note.as_bytes()).map_err(|_| NoteError::Malformed)?;
    parsed
        .verify(&VerifierList::new(vec![Box::new(verifier)]))
        .map_err(|_| NoteError::Signature)?;
    let checkpoint = Checkpoint::from_bytes(parsed.text()).map_err(|_| NoteError::NotCheckpoint)?;
    if checkpoint.origin() != name {
        return Err(NoteError::Origin(checkpoint.origin().to_owned(), name));
    }
    Ok(Head {
        origin: checkpoint.origin().to_owned(),
        size: checkpoint.size(),
        root: *checkpoint.hash(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // golang.org/x/mod/sumdb/note's example key and signed note.
    const GO_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const GO_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const GO_NOTE: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    #[test]
    fn the_reference_key_gives_the_reference_verifier_key_id_and_signature() {
        let signer = CheckpointSigner::from_key(GO_SKEY).expect("key");
        assert_eq!(signer.verifier_key(), GO_VKEY);
        assert_eq!(signer.key_id(), 0xc74f_20a3);
        let mut note = Note::new(GO_TEXT.as_bytes(), &[]).expect("note");
        note.add_sigs(&[&signer.signer]).expect("signed");
        assert_eq!(String::from_utf8(note.to_bytes()).expect("utf-8"), GO_NOTE);
    }

    #[test]
    fn a_checkpoint_round_trips_and_says_what_the_spec_says() {
        let (_, signer) = CheckpointSigner::generate("audit.pmcore.example/log").expect("key");
        let root = tlog_tiles::record_hash(b"x");
        let note = signer.sign(42, root).expect("signed");
        let text = note.split("\n\n").next().expect("text");
        assert_eq!(
            text,
            format!(
                "audit.pmcore.example/log\n42\n{}",
                base64::engine::general_purpose::STANDARD.encode(root.0)
            )
        );
        let head = open(&note, signer.verifier_key()).expect("verifies");
        assert_eq!((head.size, head.root), (42, root));
    }

    #[test]
    fn another_key_a_forged_root_or_a_foreign_text_are_refused() {
        let (_, signer) = CheckpointSigner::generate("audit.pmcore.example/log").expect("key");
        let (_, other) = CheckpointSigner::generate("audit.pmcore.example/log").expect("key");
        let root = tlog_tiles::record_hash(b"x");
        let note = signer.sign(42, root).expect("signed");
        assert_eq!(open(&note, other.verifier_key()), Err(NoteError::Signature));
        let forged = note.replacen("\n42\n", "\n43\n", 1);
        assert_eq!(
            open(&forged, signer.verifier_key()),
            Err(NoteError::Signature)
        );
        assert_eq!(open(GO_NOTE, GO_VKEY), Err(NoteError::NotCheckpoint));
        assert_eq!(
            open("garbage", signer.verifier_key()),
            Err(NoteError::Malformed)
        );
    }
}
