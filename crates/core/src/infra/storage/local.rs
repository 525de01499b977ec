//! Local-directory backend: keys are relative paths under a root directory. Writes go to a
//! temporary name in the same directory and are renamed into place only when complete.
//!
//! What it writes is private (files 0600, directories 0700), and it never follows a symbolic
//! link: a link anywhere on a key's path is refused, so nobody who can write into `BACKUP_DIR`
//! can make pgvigil read, write or delete a file elsewhere.

use super::{or_cancel, BodyReceiver, Condition, Key, ObjectMeta, ObjectReader, PutOptions, PutResult, Result, Storage, StorageError};
use async_trait::async_trait;
use bytes::Bytes;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

/// Serialises conditional writes within this process.
static CONDITIONAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A file's version tag: its length and modification time (to the nanosecond).
fn version_tag(m: &std::fs::Metadata) -> String {
    let nanos = m
        .modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos());
    format!("{}-{nanos}", m.len())
}

/// Marker in the names of incomplete files; they never show in listings.
const PARTIAL_MARK: &str = ".pgvigil-partial-";

/// Backups in a local directory.
#[derive(Debug, Clone)]
pub struct LocalStorage {
    /// Root directory.
    root: PathBuf,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> StorageError {
    if e.kind() == std::io::ErrorKind::NotFound {
        return StorageError::NotFound(path.display().to_string());
    }
    // Disk full or permissions will not fix themselves quickly, but a retry is harmless.
    StorageError::other(format!("{what} {}: {e}", path.display()), true)
}

impl LocalStorage {
    /// Opens (and creates if needed) the root directory.
    ///
    /// # Errors
    /// When the directory cannot be created.
    pub fn new(root: &Path) -> Result<Self> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| StorageError::other(format!("cannot create BACKUP_DIR {}: {e}", root.display()), false))?;
        Ok(Self { root: root.to_path_buf() })
    }

    /// Where `key` lives, once no directory on the way and not the file itself is a symbolic
    /// link.
    fn path(&self, key: &Key) -> Result<PathBuf> {
        let mut at = self.root.clone();
        for part in key.as_str().split('/') {
            at.push(part);
            match std::fs::symlink_metadata(&at) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(StorageError::other(
                        format!("{} is a symbolic link: pgvigil follows no link in BACKUP_DIR", at.display()),
                        false,
                    ))
                }
                Ok(_) => {}
                // What does not exist yet cannot be a link (and nothing below it either).
                Err(_) => break,
            }
        }
        Ok(self.root.join(key.as_str()))
    }

    /// Creates `dir` and its parents, private to this user.
    async fn make_dir(dir: &Path) -> Result<()> {
        tokio::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .await
            .map_err(|e| io_err("creating", dir, e))
    }

    /// A new file, readable and writable only by this user; an existing name (or link) fails.
    async fn create_private(path: &Path) -> Result<tokio::fs::File> {
        tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .await
            .map_err(|e| io_err("creating", path, e))
    }

    fn temp_path(&self, key: &Key) -> Result<PathBuf> {
        let path = self.path(key)?;
        let name = format!("{PARTIAL_MARK}{}-{}-{}", key.file_name(), std::process::id(), rand::random::<u32>());
        Ok(path.with_file_name(name))
    }

    async fn write_all(file: &mut tokio::fs::File, body: &mut BodyReceiver, cancel: &CancellationToken, tmp: &Path) -> Result<u64> {
        let mut size = 0u64;
        while let Some(chunk) = body.next_or_cancel(cancel).await? {
            size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(|e| io_err("writing", tmp, e))?;
        }
        file.flush().await.map_err(|e| io_err("writing", tmp, e))?;
        file.sync_all().await.map_err(|e| io_err("syncing", tmp, e))?;
        Ok(size)
    }
}

#[async_trait]
impl Storage for LocalStorage {
    async fn put(&self, key: &Key, mut body: BodyReceiver, _opts: PutOptions, cancel: &CancellationToken) -> Result<PutResult> {
        let dest = self.path(key)?;
        let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
        Self::make_dir(&dir).await?;
        let tmp = self.temp_path(key)?;
        let mut file = Self::create_private(&tmp).await?;
        let written = Self::write_all(&mut file, &mut body, cancel, &tmp).await;
        drop(file);
        match written {
            Ok(size) => {
                tokio::fs::rename(&tmp, &dest)
                    .await
                    .map_err(|e| io_err("renaming into", &dest, e))?;
                Ok(PutResult { size, parts: 1 })
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&tmp).await;
                Err(e)
            }
        }
    }

    async fn get(&self, key: &Key, _cancel: &CancellationToken) -> Result<(ObjectReader, u64)> {
        let path = self.path(key)?;
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .await
            .map_err(|e| io_err("opening", &path, e))?;
        let size = file.metadata().await.map_err(|e| io_err("reading", &path, e))?.len();
        Ok((Box::new(tokio::io::BufReader::with_capacity(1 << 20, file)), size))
    }

    async fn get_range(&self, key: &Key, offset: u64, length: u64, _cancel: &CancellationToken) -> Result<ObjectReader> {
        use tokio::io::{AsyncReadExt, AsyncSeekExt};
        let path = self.path(key)?;
        let mut file = tokio::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .await
            .map_err(|e| io_err("opening", &path, e))?;
        file.seek(std::io::SeekFrom::Start(offset))
            .await
            .map_err(|e| io_err("reading", &path, e))?;
        Ok(Box::new(tokio::io::BufReader::with_capacity(1 << 20, file).take(length)))
    }

    async fn head(&self, key: &Key, _cancel: &CancellationToken) -> Result<Option<ObjectMeta>> {
        let path = self.path(key)?;
        match tokio::fs::symlink_metadata(&path).await {
            Ok(m) if m.is_file() => Ok(Some(ObjectMeta {
                key: key.to_string(),
                size: m.len(),
                last_modified: m.modified().ok().map(Into::into),
                etag: Some(version_tag(&m)),
            })),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("reading", &path, e)),
        }
    }

    async fn list(&self, prefix: &str, cancel: &CancellationToken) -> Result<Vec<ObjectMeta>> {
        let root = self.root.clone();
        let prefix = prefix.to_string();
        let walk = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut stack = vec![root.clone()];
            while let Some(dir) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_err("listing", &dir, e)),
                };
                for entry in entries {
                    let entry = entry.map_err(|e| io_err("listing", &dir, e))?;
                    let path = entry.path();
                    let meta = entry.metadata().map_err(|e| io_err("reading", &path, e))?;
                    let rel = path.strip_prefix(&root).unwrap_or(&path).to_string_lossy().replace('\\', "/");
                    if meta.is_dir() {
                        // Descend only where the prefix can still match.
                        let as_dir = format!("{rel}/");
                        if prefix.starts_with(&as_dir) || as_dir.starts_with(&prefix) {
                            stack.push(path);
                        }
                    } else if meta.is_file() && rel.starts_with(&prefix) && !entry.file_name().to_string_lossy().starts_with(PARTIAL_MARK) {
                        out.push(ObjectMeta {
                            key: rel,
                            size: meta.len(),
                            last_modified: meta.modified().ok().map(Into::into),
                            etag: Some(version_tag(&meta)),
                        });
                    }
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        });
        or_cancel(cancel, async {
            walk.await
                .map_err(|e| StorageError::other(format!("listing task failed: {e}"), true))?
        })
        .await
    }

    async fn put_if(&self, key: &Key, data: Bytes, condition: &Condition, _cancel: &CancellationToken) -> Result<String> {
        // One writer at a time in this process; between processes, creating relies on link(2)
        // refusing an existing name, and replacing checks the version just before the rename.
        let _guard = CONDITIONAL.lock().await;
        let dest = self.path(key)?;
        let dir = dest.parent().unwrap_or(&self.root).to_path_buf();
        Self::make_dir(&dir).await?;
        let tmp = self.temp_path(key)?;
        let mut file = Self::create_private(&tmp).await?;
        file.write_all(&data).await.map_err(|e| io_err("writing", &tmp, e))?;
        drop(file);
        let placed = match condition {
            Condition::Absent => match tokio::fs::hard_link(&tmp, &dest).await {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(StorageError::PreconditionFailed(key.to_string())),
                Err(e) => Err(io_err("creating", &dest, e)),
            },
            Condition::Matches(expected) => match tokio::fs::metadata(&dest).await {
                Ok(m) if version_tag(&m) == *expected => {
                    tokio::fs::rename(&tmp, &dest).await.map_err(|e| io_err("renaming into", &dest, e))
                }
                Ok(_) => Err(StorageError::PreconditionFailed(key.to_string())),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StorageError::PreconditionFailed(key.to_string())),
                Err(e) => Err(io_err("reading", &dest, e)),
            },
        };
        let _ = tokio::fs::remove_file(&tmp).await;
        placed?;
        let meta = tokio::fs::metadata(&dest).await.map_err(|e| io_err("reading", &dest, e))?;
        Ok(version_tag(&meta))
    }

    async fn delete_many(&self, keys: &[Key], cancel: &CancellationToken) -> Result<()> {
        for key in keys {
            if cancel.is_cancelled() {
                return Err(StorageError::Cancelled);
            }
            let path = self.path(key)?;
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                    return Err(StorageError::DeleteDenied(format!("deleting {}", path.display())))
                }
                Err(e) => return Err(io_err("deleting", &path, e)),
            }
        }
        Ok(())
    }

    async fn copy(&self, from: &Key, to: &Key, cancel: &CancellationToken) -> Result<()> {
        let src = self.path(from)?;
        let dest = self.path(to)?;
        if let Some(dir) = dest.parent() {
            Self::make_dir(dir).await?;
        }
        let tmp = self.temp_path(to)?;
        let copied = or_cancel(cancel, async {
            tokio::fs::copy(&src, &tmp).await.map_err(|e| io_err("copying", &src, e))?;
            tokio::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
                .await
                .map_err(|e| io_err("copying", &tmp, e))
        })
        .await;
        if let Err(e) = copied {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        tokio::fs::rename(&tmp, &dest).await.map_err(|e| io_err("renaming into", &dest, e))
    }

    async fn pending_uploads(&self, prefix: &str, _cancel: &CancellationToken) -> Result<Vec<String>> {
        // Partial files are the local equivalent of pending multipart uploads.
        let dir = self.root.join(prefix.rsplit_once('/').map_or("", |(d, _)| d));
        let mut out = Vec::new();
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with(PARTIAL_MARK) {
                    out.push(name);
                }
            }
        }
        Ok(out)
    }

    async fn abort_pending(&self, prefix: &str, cancel: &CancellationToken) -> Result<usize> {
        let dir = self.root.join(prefix.rsplit_once('/').map_or("", |(d, _)| d));
        let mut n = 0;
        for name in self.pending_uploads(prefix, cancel).await? {
            let p = dir.join(&name);
            // Only files older than a minute: a concurrent writer may still own a fresh one.
            let old = std::fs::metadata(&p)
                .and_then(|m| m.modified())
                .map(|t| t.elapsed().unwrap_or_default().as_secs() > 60)
                .unwrap_or(false);
            if old && std::fs::remove_file(&p).is_ok() {
                n += 1;
            }
        }
        Ok(n)
    }

    fn describe(&self) -> String {
        format!("directory {}", self.root.display())
    }
}
