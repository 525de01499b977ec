//! Client-side encryption with [age](https://age-encryption.org): the backup service seals the
//! gzip stream to public keys (recipients) while it streams, holding no private key; verification,
//! `restore` and `check` open it with an identity. The object is a standard age file, so
//! `age -d -i key.txt backup.sql.gz.age | gunzip | psql` restores it without pgvigil.

use age::x25519::{Identity, Recipient};
use std::io::{self, Read, Write};
use std::sync::{Arc, Mutex};

/// Where the age writer puts ciphertext until [`Sealer`] hands it on.
#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Sink {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }
}

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Encrypts a stream piece by piece: what goes in as plaintext comes out as ciphertext (age
/// seals 64 KiB chunks, so a piece may come out a little later), in bounded memory.
pub struct Sealer {
    writer: age::stream::StreamWriter<Sink>,
    sink: Sink,
    /// Bytes of the age header and payload nonce.
    header: u64,
}

/// Plaintext bytes per age payload chunk; each chunk gains a 16-byte tag.
const CHUNK: u64 = 64 * 1024;

impl Sealer {
    /// A sealer to `recipients` (at least one).
    ///
    /// # Errors
    /// When there is no recipient.
    pub fn new(recipients: &[Recipient]) -> io::Result<Self> {
        let encryptor = age::Encryptor::with_recipients(recipients.iter().map(|r| r as &dyn age::Recipient))
            .map_err(|e| io::Error::other(format!("cannot encrypt: {e}")))?;
        let sink = Sink::default();
        let writer = encryptor.wrap_output(sink.clone())?;
        let header = sink.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len() as u64;
        Ok(Self { writer, sink, header })
    }

    /// The length of the whole age file for `plain` bytes of plaintext in all: header and
    /// nonce, then every 64 KiB chunk with its tag (the last one possibly short; at least one).
    pub fn sealed_len(&self, plain: u64) -> u64 {
        self.header + plain + 16 * plain.div_ceil(CHUNK).max(1)
    }

    /// Encrypts `plain`; returns the ciphertext ready so far (the header comes with the first).
    ///
    /// # Errors
    /// Never in practice (the sink is memory); kept for the writer's signature.
    pub fn seal(&mut self, plain: &[u8]) -> io::Result<Vec<u8>> {
        self.writer.write_all(plain)?;
        Ok(self.sink.take())
    }

    /// Ends the stream; returns the last ciphertext.
    ///
    /// # Errors
    /// As [`Sealer::seal`].
    pub fn finish(self) -> io::Result<Vec<u8>> {
        let sink = self.writer.finish()?;
        Ok(sink.take())
    }
}

/// The public keys of `identities`, as `age1…` strings.
pub fn public_keys(identities: &[Identity]) -> Vec<String> {
    identities.iter().map(|i| i.to_public().to_string()).collect()
}

/// Why an encrypted object could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// None of the identities is among the object's recipients: the environment's fault (the
    /// wrong key file), not the backup's.
    #[error(
        "cannot decrypt with this identity: the backup was encrypted to other recipients (BACKUP_ENCRYPTION_IDENTITY_FILE holds {held})"
    )]
    WrongIdentity {
        /// The public keys of the identities held.
        held: String,
    },
    /// No identity configured at all.
    #[error("the backup is encrypted: set BACKUP_ENCRYPTION_IDENTITY_FILE to the age identity file whose public key the backup service encrypts to")]
    NoIdentity,
    /// Not an age file, or reading its header failed.
    #[error("the object is not a readable age file: {0}")]
    Damaged(String),
}

/// Opens an age stream with `identities`.
///
/// # Errors
/// [`OpenError`].
pub fn open<'a, R: Read + 'a>(input: R, identities: &[Identity]) -> Result<Box<dyn Read + 'a>, OpenError> {
    if identities.is_empty() {
        return Err(OpenError::NoIdentity);
    }
    let decryptor = age::Decryptor::new(input).map_err(|e| OpenError::Damaged(e.to_string()))?;
    match decryptor.decrypt(identities.iter().map(|i| i as &dyn age::Identity)) {
        Ok(reader) => Ok(Box::new(reader)),
        Err(age::DecryptError::NoMatchingKeys) => Err(OpenError::WrongIdentity {
            held: public_keys(identities).join(", "),
        }),
        Err(e) => Err(OpenError::Damaged(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sealed_length_is_known_before_the_end() {
        let key = Identity::generate();
        for total in [0u64, 1, 100, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17] {
            let mut s = Sealer::new(&[key.to_public()]).unwrap();
            let mut out = Vec::new();
            // In uneven pieces, as members come.
            let data = vec![7u8; total as usize];
            for piece in data.chunks(40_000) {
                out.extend(s.seal(piece).unwrap());
            }
            let want = s.sealed_len(total);
            out.extend(s.finish().unwrap());
            assert_eq!(out.len() as u64, want, "{total}");
        }
    }

    fn sealed(recipients: &[Recipient], pieces: &[&[u8]]) -> Vec<u8> {
        let mut s = Sealer::new(recipients).unwrap();
        let mut out = Vec::new();
        for p in pieces {
            out.extend(s.seal(p).unwrap());
        }
        out.extend(s.finish().unwrap());
        out
    }

    #[test]
    fn a_stream_sealed_in_pieces_opens_with_any_of_its_identities() {
        let (a, b) = (Identity::generate(), Identity::generate());
        let big = vec![7u8; 200_000];
        let ct = sealed(&[a.to_public(), b.to_public()], &[b"hello ", &big, b"world"]);
        for id in [&a, &b] {
            let mut plain = Vec::new();
            open(&ct[..], std::slice::from_ref(id)).unwrap().read_to_end(&mut plain).unwrap();
            assert_eq!(plain.len(), 6 + big.len() + 5);
            assert!(plain.starts_with(b"hello ") && plain.ends_with(b"world"));
        }
    }

    #[test]
    fn the_wrong_identity_and_no_identity_are_told_apart_from_damage() {
        let a = Identity::generate();
        let ct = sealed(&[a.to_public()], &[b"data"]);
        let other = Identity::generate();
        assert!(matches!(open(&ct[..], &[other]), Err(OpenError::WrongIdentity { .. })));
        assert!(matches!(open(&ct[..], &[]), Err(OpenError::NoIdentity)));
        assert!(matches!(open(&b"\x1f\x8b plain gzip"[..], &[a]), Err(OpenError::Damaged(_))));
    }
}
