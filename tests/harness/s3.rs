//! A real S3-protocol server (s3s-fs over a temp directory) on a TCP port inside the test
//! process. It can be stopped and started again on the same port to simulate outages, and
//! [`Faults`] make chosen operations answer with a chosen S3 error (access denied, throttling)
//! the way a real store does.

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use s3s::access::{S3Access, S3AccessContext};
use s3s::auth::SimpleAuth;
use s3s::dto::*;
use s3s::path::S3Path;
use s3s::service::S3ServiceBuilder;
use s3s::{S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Credentials accepted by the test server.
pub const ACCESS_KEY: &str = "pgvigil-test-access";
/// Secret key accepted by the test server.
pub const SECRET_KEY: &str = "pgvigil-test-secret-KEY-0123456789";
/// Bucket created at start.
pub const BUCKET: &str = "pgvigil-test";

/// A running (or stopped) S3 server.
pub struct S3Server {
    /// Root directory; buckets are its sub-directories.
    pub root: TempDir,
    /// Address it listens on (kept across restarts).
    pub addr: SocketAddr,
    /// Errors to inject; shared with the running server (and kept across restarts).
    pub faults: Faults,
    /// Cancels the accept loop and every open connection.
    stop: Mutex<Option<CancellationToken>>,
}

/// One injected failure: operations named `op` (S3 API names such as `PutObject`,
/// `UploadPart`, `DeleteObjects`, `GetObject`) whose key contains `key_contains` fail with
/// `code`, `remaining` more times (`None`: until cleared).
struct Rule {
    op: String,
    key_contains: String,
    code: S3ErrorCode,
    remaining: Option<usize>,
}

/// How a `DeleteObjects` request fares for keys that contain a given text.
#[derive(Clone)]
enum DeleteFault {
    /// The request succeeds (HTTP 200) and lists these keys as not deleted, `AccessDenied` —
    /// what AWS and MinIO answer when the policy forbids deleting them.
    DeniedPerKey,
    /// The whole request fails with this error.
    Fail(S3ErrorCode),
}

/// Errors the test server answers with, set while it runs.
#[derive(Clone, Default)]
pub struct Faults {
    rules: Arc<Mutex<Vec<Rule>>>,
    deletes: Arc<Mutex<Vec<(String, DeleteFault)>>>,
    hits: Arc<Mutex<Vec<String>>>,
    /// When set, requests signed for another region are refused the way AWS refuses them.
    region: Arc<Mutex<Option<String>>>,
    /// Object lock, enforced the way a bucket created with it enforces it.
    locks: Arc<Mutex<Locks>>,
}

/// Object lock state of the bucket.
#[derive(Default)]
struct Locks {
    /// The bucket was "created with object lock".
    enabled: bool,
    /// It has a default retention: every write must carry Content-MD5.
    default_retention: bool,
    /// Key → (mode, retain-until as Unix seconds), as the writes asked.
    objects: std::collections::BTreeMap<String, (String, i64)>,
    /// Keys of multipart uploads created with a lock: their parts need Content-MD5.
    md5_required: std::collections::BTreeSet<String>,
    /// Deletes of keys still locked (refused).
    refused: Vec<String>,
}

/// One object's lock as the server recorded it.
#[derive(Debug, Clone)]
pub struct LockRecord {
    /// Object key (without the bucket).
    pub key: String,
    /// `GOVERNANCE` or `COMPLIANCE`.
    pub mode: String,
    /// Retain-until date, Unix seconds.
    pub until: i64,
}

impl Faults {
    /// The bucket behaves as one created with object lock: it says so, records the lock of every
    /// write that asks for one (refusing such writes without Content-MD5, as AWS does) and
    /// refuses to delete a locked object before its date.
    pub fn enable_object_lock(&self) {
        self.locks.lock().unwrap().enabled = true;
    }

    /// As [`Faults::enable_object_lock`], with a default retention rule: like AWS, every write
    /// (also those without lock headers) must then carry Content-MD5.
    pub fn enable_default_retention(&self) {
        let mut l = self.locks.lock().unwrap();
        l.enabled = true;
        l.default_retention = true;
    }

    /// The locks recorded for keys containing `key_contains`.
    pub fn locks(&self, key_contains: &str) -> Vec<LockRecord> {
        let l = self.locks.lock().unwrap();
        l.objects
            .iter()
            .filter(|(k, _)| k.contains(key_contains))
            .map(|(k, (mode, until))| LockRecord {
                key: k.clone(),
                mode: mode.clone(),
                until: *until,
            })
            .collect()
    }

    /// Deletes refused because the object was locked.
    pub fn locked_deletes(&self) -> Vec<String> {
        self.locks.lock().unwrap().refused.clone()
    }

    /// Records a write's lock; an error when it carries one without Content-MD5.
    fn lock_write(&self, key: &str, mode: Option<&ObjectLockMode>, until: Option<&Timestamp>, md5: bool) -> S3Result<()> {
        if !md5 && self.locks.lock().unwrap().default_retention {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                "Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests with Object Lock parameters",
            ));
        }
        let (Some(mode), Some(until)) = (mode, until) else { return Ok(()) };
        if !md5 {
            return Err(S3Error::with_message(
                S3ErrorCode::InvalidRequest,
                "Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests with Object Lock parameters",
            ));
        }
        let until = time::OffsetDateTime::from(until.clone()).unix_timestamp();
        self.locks
            .lock()
            .unwrap()
            .objects
            .insert(key.to_string(), (mode.as_str().to_string(), until));
        Ok(())
    }

    /// Whether deleting `key` must be refused now (and notes the attempt).
    fn delete_refused(&self, key: &str) -> bool {
        let mut l = self.locks.lock().unwrap();
        let now = time::OffsetDateTime::now_utc().unix_timestamp();
        let locked = l.objects.get(key).is_some_and(|(_, until)| *until > now);
        if locked {
            l.refused.push(key.to_string());
        }
        locked
    }

    /// Every `op` on a key containing `key_contains` is denied until [`Faults::clear`].
    pub fn deny(&self, op: &str, key_contains: &str) {
        self.add(op, key_contains, S3ErrorCode::AccessDenied, None);
    }

    /// The next `times` `op` requests are throttled (503 SlowDown, which clients retry).
    pub fn slow_down(&self, op: &str, times: usize) {
        self.add(op, "", S3ErrorCode::SlowDown, Some(times));
    }

    /// Every `op` fails with `code` (e.g. `InternalError` for a failing store) until cleared.
    pub fn fail(&self, op: &str, code: S3ErrorCode) {
        self.add(op, "", code, None);
    }

    /// The bucket "lives" in `region`: requests signed for any other region get AWS's answer,
    /// `AuthorizationHeaderMalformed … the region 'X' is wrong; expecting 'Y'`.
    pub fn bucket_region(&self, region: &str) {
        *self.region.lock().unwrap() = Some(region.to_string());
    }

    fn add(&self, op: &str, key_contains: &str, code: S3ErrorCode, remaining: Option<usize>) {
        self.rules.lock().unwrap().push(Rule {
            op: op.to_string(),
            key_contains: key_contains.to_string(),
            code,
            remaining,
        });
    }

    /// `DeleteObjects` answers 200 but refuses (`AccessDenied`) every key containing
    /// `key_contains`, deleting the others, as stores do under a policy without delete rights.
    pub fn deny_deleting(&self, key_contains: &str) {
        self.deletes
            .lock()
            .unwrap()
            .push((key_contains.to_string(), DeleteFault::DeniedPerKey));
    }

    /// `DeleteObjects` requests that include a key containing `key_contains` fail with `code`.
    pub fn fail_deleting(&self, key_contains: &str, code: S3ErrorCode) {
        self.deletes
            .lock()
            .unwrap()
            .push((key_contains.to_string(), DeleteFault::Fail(code)));
    }

    fn delete_fault(&self, key: &str) -> Option<DeleteFault> {
        let found = self
            .deletes
            .lock()
            .unwrap()
            .iter()
            .find(|(k, _)| key.contains(k.as_str()))
            .map(|(_, f)| f.clone());
        if found.is_some() {
            self.hits.lock().unwrap().push("DeleteObjects".to_string());
        }
        found
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
        self.deletes.lock().unwrap().clear();
        *self.region.lock().unwrap() = None;
    }

    /// How many requests of `op` were failed on purpose so far.
    pub fn injected(&self, op: &str) -> usize {
        self.hits.lock().unwrap().iter().filter(|h| *h == op).count()
    }

    fn take(&self, op: &str, key: &str) -> Option<S3ErrorCode> {
        let mut rules = self.rules.lock().unwrap();
        let rule = rules
            .iter_mut()
            .find(|r| r.op == op && key.contains(&r.key_contains) && r.remaining != Some(0))?;
        if let Some(n) = &mut rule.remaining {
            *n -= 1;
        }
        self.hits.lock().unwrap().push(op.to_string());
        Some(rule.code.clone())
    }
}

#[async_trait::async_trait]
impl S3Access for Faults {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        if cx.credentials().is_none() {
            return Err(S3Error::with_message(S3ErrorCode::AccessDenied, "Signature is required"));
        }
        if let Some(expected) = self.region.lock().unwrap().clone() {
            // Authorization: AWS4-HMAC-SHA256 Credential=KEY/DATE/REGION/s3/aws4_request, ...
            let auth = cx.headers().get("authorization").and_then(|v| v.to_str().ok()).unwrap_or("");
            let signed = auth.split("Credential=").nth(1).and_then(|c| c.split('/').nth(2)).unwrap_or("");
            if signed != expected {
                return Err(S3Error::with_message(
                    S3ErrorCode::AuthorizationHeaderMalformed,
                    format!("The authorization header is malformed; the region '{signed}' is wrong; expecting '{expected}'"),
                ));
            }
        }
        let key = match cx.s3_path() {
            S3Path::Object { key, .. } => key.to_string(),
            _ => String::new(),
        };
        match self.take(cx.s3_op().name(), &key) {
            Some(code) => Err(S3Error::with_message(code, "injected by the test")),
            None => Ok(()),
        }
    }
}

impl S3Server {
    /// Starts a server with one empty bucket.
    pub async fn start() -> Self {
        let root = tempfile::Builder::new().prefix("pgvigil-s3-").tempdir().unwrap();
        std::fs::create_dir(root.path().join(BUCKET)).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = Self {
            root,
            addr,
            faults: Faults::default(),
            stop: Mutex::new(None),
        };
        server.serve(listener);
        server
    }

    fn serve(&self, listener: TcpListener) {
        let token = serve_dir(self.root.path(), listener, self.faults.clone());
        *self.stop.lock().unwrap() = Some(token);
    }

    /// Stops accepting and cuts every open connection.
    pub fn stop(&self) {
        if let Some(t) = self.stop.lock().unwrap().take() {
            t.cancel();
        }
    }

    /// Starts again on the same address.
    pub async fn restart(&self) {
        let mut tries = 0;
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    let _ = e;
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => panic!("cannot rebind {}: {e}", self.addr),
            }
        };
        self.serve(listener);
    }

    /// `http://127.0.0.1:PORT`
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Environment variables that point pgvigil at this server, with a prefix.
    pub fn vars(&self, prefix: &str) -> Vec<(&'static str, String)> {
        self.vars_via(prefix, self.endpoint())
    }

    /// Like [`S3Server::vars`], but reaching the server through `endpoint` (e.g. a fault proxy).
    pub fn vars_via(&self, prefix: &str, endpoint: String) -> Vec<(&'static str, String)> {
        vec![
            ("S3_BUCKET", BUCKET.to_string()),
            ("S3_ENDPOINT", endpoint),
            ("S3_REGION", "us-east-1".to_string()),
            ("S3_ACCESS_KEY_ID", ACCESS_KEY.to_string()),
            ("S3_SECRET_ACCESS_KEY", SECRET_KEY.to_string()),
            ("BACKUP_PREFIX", prefix.to_string()),
        ]
    }

    /// Multipart uploads that were started and neither completed nor aborted. (s3s-fs does not
    /// implement ListMultipartUploads, so this reads its state files directly.)
    pub fn pending_uploads(&self) -> Vec<String> {
        std::fs::read_dir(self.root.path())
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".upload"))
            .collect()
    }

    /// Creates another bucket.
    pub fn create_bucket(&self, name: &str) {
        std::fs::create_dir(self.root.path().join(name)).unwrap();
    }

    /// Makes the object at `key` `len` bytes long without writing them (a sparse file), so that
    /// a listing shows a backup as large as a big database's.
    pub fn make_sparse(&self, key: &str, len: u64) {
        let path = self.root.path().join(BUCKET).join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len)
            .unwrap();
    }

    /// `length` bytes of an object from `offset`, with a ranged GET as any S3 client sends it.
    pub async fn get_range(&self, key: &str, offset: u64, length: u64) -> Vec<u8> {
        use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
        let conf = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(self.endpoint())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
            .force_path_style(true)
            .build();
        let out = aws_sdk_s3::Client::from_conf(conf)
            .get_object()
            .bucket(BUCKET)
            .key(key)
            .range(format!("bytes={offset}-{}", offset + length - 1))
            .send()
            .await
            .unwrap();
        out.body.collect().await.unwrap().into_bytes().to_vec()
    }
}

/// Serves the S3 API over `root` (buckets are its sub-directories) on `listener` until the
/// returned token is cancelled, failing what `faults` says. Used by the tests and by the
/// benchmark's S3 server.
pub fn serve_dir(root: &std::path::Path, listener: TcpListener, faults: Faults) -> CancellationToken {
    let fs = s3s_fs::FileSystem::new(root).unwrap();
    let mut b = S3ServiceBuilder::new(Faulty {
        fs,
        faults: faults.clone(),
        conditional: tokio::sync::Mutex::new(()),
    });
    b.set_auth(SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
    b.set_access(faults);
    let service = b.build();
    let token = CancellationToken::new();
    let stop = token.clone();
    tokio::spawn(async move {
        let http = ConnBuilder::new(TokioExecutor::new());
        loop {
            let socket = tokio::select! {
                () = token.cancelled() => break,
                r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
            };
            let conn = http.serve_connection(TokioIo::new(socket), service.clone()).into_owned();
            let t = token.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = t.cancelled() => {}
                    _ = conn => {}
                }
            });
        }
    });
    stop
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// s3s-fs with [`Faults`] applied where an error must be part of a successful answer (the
/// per-key results of `DeleteObjects`) or depends on the request body.
struct Faulty {
    fs: s3s_fs::FileSystem,
    faults: Faults,
    /// s3s-fs checks `If-None-Match`/`If-Match` and then writes, so two conditional writes can
    /// both pass; S3 decides them atomically. One at a time here, as there.
    conditional: tokio::sync::Mutex<()>,
}

macro_rules! pass {
    ($($name:ident: $input:ident => $output:ident),* $(,)?) => {
        $(fn $name<'life0, 'async_trait>(
            &'life0 self,
            req: S3Request<$input>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = S3Result<S3Response<$output>>> + Send + 'async_trait>>
        where
            'life0: 'async_trait,
            Self: 'async_trait,
        {
            self.fs.$name(req)
        })*
    };
}

impl S3 for Faulty {
    pass! {
        create_bucket: CreateBucketInput => CreateBucketOutput,
        copy_object: CopyObjectInput => CopyObjectOutput,
        get_bucket_location: GetBucketLocationInput => GetBucketLocationOutput,
        get_object: GetObjectInput => GetObjectOutput,
        head_bucket: HeadBucketInput => HeadBucketOutput,
        head_object: HeadObjectInput => HeadObjectOutput,
        list_buckets: ListBucketsInput => ListBucketsOutput,
        list_objects: ListObjectsInput => ListObjectsOutput,
        list_objects_v2: ListObjectsV2Input => ListObjectsV2Output,
        upload_part_copy: UploadPartCopyInput => UploadPartCopyOutput,
        list_parts: ListPartsInput => ListPartsOutput,
        complete_multipart_upload: CompleteMultipartUploadInput => CompleteMultipartUploadOutput,
        abort_multipart_upload: AbortMultipartUploadInput => AbortMultipartUploadOutput,
    }

    fn put_object<'life0, 'async_trait>(
        &'life0 self,
        req: S3Request<PutObjectInput>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = S3Result<S3Response<PutObjectOutput>>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let i = &req.input;
            self.faults.lock_write(
                &i.key,
                i.object_lock_mode.as_ref(),
                i.object_lock_retain_until_date.as_ref(),
                i.content_md5.is_some(),
            )?;
            if req.input.if_none_match.is_some() || req.input.if_match.is_some() {
                let _one_at_a_time = self.conditional.lock().await;
                self.fs.put_object(req).await
            } else {
                self.fs.put_object(req).await
            }
        })
    }

    fn create_multipart_upload<'life0, 'async_trait>(
        &'life0 self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = S3Result<S3Response<CreateMultipartUploadOutput>>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let i = &req.input;
            if i.object_lock_mode.is_some() {
                // The parts must then carry Content-MD5.
                self.faults
                    .lock_write(&i.key, i.object_lock_mode.as_ref(), i.object_lock_retain_until_date.as_ref(), true)?;
                self.faults.locks.lock().unwrap().md5_required.insert(i.key.clone());
            }
            self.fs.create_multipart_upload(req).await
        })
    }

    fn upload_part<'life0, 'async_trait>(
        &'life0 self,
        req: S3Request<UploadPartInput>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = S3Result<S3Response<UploadPartOutput>>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let needs = {
                let l = self.faults.locks.lock().unwrap();
                l.default_retention || l.md5_required.contains(&req.input.key)
            };
            if needs && req.input.content_md5.is_none() {
                return Err(S3Error::with_message(
                    S3ErrorCode::InvalidRequest,
                    "Content-MD5 OR x-amz-checksum- HTTP header is required for Put Object requests with Object Lock parameters",
                ));
            }
            self.fs.upload_part(req).await
        })
    }

    fn get_object_lock_configuration<'life0, 'async_trait>(
        &'life0 self,
        _req: S3Request<GetObjectLockConfigurationInput>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = S3Result<S3Response<GetObjectLockConfigurationOutput>>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            if !self.faults.locks.lock().unwrap().enabled {
                return Err(S3Error::with_message(
                    S3ErrorCode::ObjectLockConfigurationNotFoundError,
                    "Object Lock configuration does not exist for this bucket",
                ));
            }
            Ok(S3Response::new(GetObjectLockConfigurationOutput {
                object_lock_configuration: Some(ObjectLockConfiguration {
                    object_lock_enabled: Some(ObjectLockEnabled::from_static(ObjectLockEnabled::ENABLED)),
                    rule: None,
                }),
            }))
        })
    }

    fn delete_object<'life0, 'async_trait>(
        &'life0 self,
        req: S3Request<DeleteObjectInput>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = S3Result<S3Response<DeleteObjectOutput>>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            if self.faults.delete_refused(&req.input.key) {
                return Err(S3Error::with_message(S3ErrorCode::AccessDenied, "the object is locked"));
            }
            self.fs.delete_object(req).await
        })
    }

    fn delete_objects<'life0, 'async_trait>(
        &'life0 self,
        mut req: S3Request<DeleteObjectsInput>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = S3Result<S3Response<DeleteObjectsOutput>>> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        Box::pin(async move {
            let mut refused = Vec::new();
            let mut kept = Vec::new();
            for object in std::mem::take(&mut req.input.delete.objects) {
                if self.faults.delete_refused(&object.key) {
                    refused.push(s3s::dto::Error {
                        code: Some("AccessDenied".into()),
                        key: Some(object.key),
                        message: Some("the object is locked".into()),
                        ..Default::default()
                    });
                    continue;
                }
                match self.faults.delete_fault(&object.key) {
                    Some(DeleteFault::Fail(code)) => return Err(S3Error::with_message(code, "injected by the test")),
                    Some(DeleteFault::DeniedPerKey) => refused.push(s3s::dto::Error {
                        code: Some("AccessDenied".into()),
                        key: Some(object.key),
                        message: Some("Access Denied".into()),
                        ..Default::default()
                    }),
                    None => kept.push(object),
                }
            }
            req.input.delete.objects = kept;
            let mut out = self.fs.delete_objects(req).await?;
            if !refused.is_empty() {
                out.output.errors = Some(refused);
            }
            Ok(out)
        })
    }
}
