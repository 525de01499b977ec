//! Authenticated backups. The backup service signs every manifest with a minisign key
//! (`BACKUP_SIGNING_KEY_FILE`) that is not an S3 credential; the manifest holds the SHA-256 of the
//! object and of the roles saved with it, so the signature covers them too. The verify service
//! and the CLI, given `BACKUP_TRUSTED_KEYS`, restore and verify only what one of those keys
//! signed. minisign's format is read by the stock tool, so anyone can check a manifest without
//! pgvigil: `minisign -V -m <manifest>.json -x <manifest>.json.minisig -P <public key>`.

use minisign::{PublicKey, SecretKey, SignatureBox};
use std::io::Cursor;

/// A key id as minisign prints it (`minisign -G`, `-V`): 16 hex digits.
fn key_id(keynum: &[u8]) -> String {
    let mut le = [0u8; 8];
    let n = keynum.len().min(8);
    le[..n].copy_from_slice(&keynum[..n]);
    format!("{:016X}", u64::from_le_bytes(le))
}

/// An unencrypted key as minisign 0.11 writes it with `-W`: no key-derivation algorithm, and a
/// checksum of zeros (which the crate takes for damage). Whether the key is sound is checked by
/// signing with it.
fn without_checksum(text: &str) -> Option<SecretKey> {
    use base64::Engine;
    let line = text.lines().nth(1)?.trim();
    let bytes = base64::engine::general_purpose::STANDARD.decode(line).ok()?;
    let unencrypted = bytes.get(2..4) == Some(&[0, 0][..]);
    let zeroed = bytes.len() == 158 && bytes[126..].iter().all(|b| *b == 0);
    (unencrypted && zeroed).then(|| SecretKey::from_bytes(&bytes).ok()).flatten()
}

/// The backup service's signing key. Never printed: `Debug` shows only its id.
#[derive(Clone)]
pub struct SigningKey {
    /// The secret key, without a password.
    secret: SecretKey,
    /// Its public half, to check each signature once made.
    public: PublicKey,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigningKey({})", self.id())
    }
}

impl SigningKey {
    /// Reads a minisign secret key file made without a password (`minisign -G -W`).
    ///
    /// # Errors
    /// Why the file is not such a key, in a sentence that never shows its content.
    pub fn from_file_text(text: &str) -> Result<Self, String> {
        const NOT_A_KEY: &str = "is not a minisign secret key file (made with: minisign -G -W -p pgvigil.pub -s pgvigil.key)";
        let boxed = minisign::SecretKeyBox::from_string(text).map_err(|_| NOT_A_KEY.to_string())?;
        let secret = match boxed.into_unencrypted_secret_key() {
            Ok(secret) => secret,
            Err(_) => without_checksum(text).ok_or_else(|| {
                "is protected by a password or damaged: make a key without a password (minisign -G -W -p pgvigil.pub -s pgvigil.key) and keep the file readable only by the backup service".to_string()
            })?,
        };
        if secret.is_encrypted() {
            return Err("is protected by a password: make a key without one (minisign -G -W)".into());
        }
        let public = PublicKey::from_secret_key(&secret).map_err(|_| "holds a damaged secret key".to_string())?;
        let key = Self { secret, public };
        // The secret half must match the public half it carries: a damaged key signs nothing.
        key.sign(b"pgvigil", "check")
            .map_err(|_| "holds a damaged secret key".to_string())?;
        Ok(key)
    }

    /// The key id (what `minisign -V` prints as "Signature and comment signature verified" for).
    pub fn id(&self) -> String {
        key_id(self.secret.keynum())
    }

    /// The public key, base64 (what `BACKUP_TRUSTED_KEYS` takes).
    pub fn public_base64(&self) -> String {
        self.public.to_base64()
    }

    /// Signs `data` with `comment` as the trusted comment: the text of a `.minisig` file.
    ///
    /// # Errors
    /// The signature could not be made (or not checked with the public half).
    pub fn sign(&self, data: &[u8], comment: &str) -> Result<String, String> {
        minisign::sign(
            Some(&self.public),
            &self.secret,
            Cursor::new(data),
            Some(comment),
            Some("signed by pgvigil"),
        )
        .map(SignatureBox::into_string)
        .map_err(|e| format!("signing failed: {e}"))
    }
}

/// For the start line: the key manifests are signed with, or that they are not.
pub fn describe_signing(key: Option<&SigningKey>) -> String {
    key.map_or("off: backups are not authenticated (BACKUP_SIGNING_KEY_FILE)".to_string(), |k| {
        format!("key {}", k.id())
    })
}

/// Why a manifest is not trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    /// There is no signature.
    #[error("the manifest is not signed")]
    Unsigned,
    /// The signature file is not a minisign signature, or the manifest itself cannot be read.
    #[error("the manifest or its signature is unreadable")]
    Unreadable,
    /// Signed, but by a key that is not trusted.
    #[error("the manifest is signed by key {0}, which is not among BACKUP_TRUSTED_KEYS")]
    OtherKey(String),
    /// The signature does not match the manifest (it was changed after signing).
    #[error("the manifest's signature does not match it (changed after it was signed)")]
    BadSignature,
    /// A valid signature, for another backup's manifest.
    #[error("the signed manifest belongs to another backup ({0})")]
    OtherBackup(String),
}

/// `BACKUP_TRUSTED_KEYS`: the public keys whose signatures are trusted (several during a key
/// rotation). Empty: backups are not authenticated.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys(pub Vec<PublicKey>);

impl TrustedKeys {
    /// Reads public keys: base64 keys (`RW…`) separated by commas, spaces or lines, or the
    /// contents of minisign `.pub` files (their `untrusted comment:` lines are skipped).
    ///
    /// # Errors
    /// A word that is not a minisign public key.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys = Vec::new();
        for line in text
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("untrusted comment:") && !l.starts_with('#'))
        {
            for word in line.split([',', ' ', '\t']).map(str::trim).filter(|w| !w.is_empty()) {
                let key = PublicKey::from_base64(word).map_err(|_| {
                    format!(
                        "{:?} is not a minisign public key (the second line of the .pub file that minisign -G wrote)",
                        word.chars().take(60).collect::<String>()
                    )
                })?;
                keys.push(key);
            }
        }
        Ok(Self(keys))
    }

    /// Whether any key is set (backups are authenticated).
    pub fn is_set(&self) -> bool {
        !self.0.is_empty()
    }

    /// For the start line: the trusted keys, or that backups are not authenticated.
    pub fn describe(&self) -> String {
        if self.is_set() {
            self.ids().join(", ")
        } else {
            "none: backups are not authenticated (BACKUP_TRUSTED_KEYS)".to_string()
        }
    }

    /// The ids of the keys, for messages.
    pub fn ids(&self) -> Vec<String> {
        self.0.iter().map(|k| key_id(k.keynum())).collect()
    }

    /// Checks `signature` (a `.minisig` text) over `data` with the trusted keys; `comment` is the
    /// trusted comment it must carry. Returns the id of the key that signed.
    ///
    /// # Errors
    /// [`Untrusted`]: why the data is not what a trusted backup service signed.
    pub fn verify(&self, data: &[u8], signature: Option<&str>, comment: &str) -> Result<String, Untrusted> {
        let text = signature.ok_or(Untrusted::Unsigned)?;
        let sig = SignatureBox::from_string(text).map_err(|_| Untrusted::Unreadable)?;
        let signer = key_id(sig.keynum());
        let key = self
            .0
            .iter()
            .find(|k| k.keynum() == sig.keynum())
            .ok_or_else(|| Untrusted::OtherKey(signer.clone()))?;
        minisign::verify(key, &sig, Cursor::new(data), true, false, false).map_err(|_| Untrusted::BadSignature)?;
        match sig.trusted_comment() {
            Ok(c) if c == comment => Ok(signer),
            Ok(c) => Err(Untrusted::OtherBackup(c.chars().filter(|c| !c.is_control()).take(120).collect())),
            Err(_) => Err(Untrusted::Unreadable),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        let pair = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        let text = pair.sk.to_box(None).unwrap().into_string();
        SigningKey::from_file_text(&text).unwrap()
    }

    #[test]
    fn only_what_a_trusted_key_signed_for_this_backup_is_trusted() {
        let (ours, theirs) = (key(), key());
        let trusted = TrustedKeys::parse(&format!("untrusted comment: x\n{}\n", ours.public_base64())).unwrap();
        let manifest = b"{\"key\":\"p/backup_2026.sql.gz\"}";
        let sig = ours.sign(manifest, "pgvigil manifest for p/backup_2026.sql.gz").unwrap();
        assert_eq!(
            trusted.verify(manifest, Some(&sig), "pgvigil manifest for p/backup_2026.sql.gz"),
            Ok(ours.id())
        );
        assert_eq!(trusted.verify(manifest, None, "c"), Err(Untrusted::Unsigned));
        assert_eq!(trusted.verify(manifest, Some("garbage"), "c"), Err(Untrusted::Unreadable));
        let changed = b"{\"key\":\"p/backup_2027.sql.gz\"}";
        assert_eq!(
            trusted.verify(changed, Some(&sig), "pgvigil manifest for p/backup_2026.sql.gz"),
            Err(Untrusted::BadSignature)
        );
        assert!(matches!(
            trusted.verify(manifest, Some(&sig), "pgvigil manifest for p/other.sql.gz"),
            Err(Untrusted::OtherBackup(_))
        ));
        let foreign = theirs.sign(manifest, "pgvigil manifest for p/backup_2026.sql.gz").unwrap();
        assert_eq!(
            trusted.verify(manifest, Some(&foreign), "pgvigil manifest for p/backup_2026.sql.gz"),
            Err(Untrusted::OtherKey(theirs.id()))
        );
        assert!(!format!("{ours:?}").contains(&ours.public_base64()), "Debug shows only the id");
        assert!(TrustedKeys::parse("RWnot-a-key").is_err());
        assert!(!TrustedKeys::parse("").unwrap().is_set());
    }
}
