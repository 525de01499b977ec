//! SDK errors turned into one plain sentence each, with a verdict on whether a retry can help.
//! Callers branch on [`StorageError`]'s variants, never on these sentences.

use crate::infra::storage::StorageError;
use aws_sdk_s3::config::http::HttpResponse;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};

/// Turns an SDK error into one plain sentence and a retry verdict.
pub(super) fn classify<E>(op: &str, target: &str, err: &SdkError<E, HttpResponse>) -> StorageError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match err {
        SdkError::TimeoutError(_) => StorageError::other(format!("{op} {target}: the S3 endpoint did not answer in time"), true),
        SdkError::DispatchFailure(d) => {
            let why = if d.is_timeout() {
                "timed out connecting"
            } else {
                "could not connect (endpoint unreachable)"
            };
            StorageError::other(format!("{op} {target}: {why}"), true)
        }
        SdkError::ResponseError(_) => {
            StorageError::other(format!("{op} {target}: the S3 endpoint sent a malformed or cut-off response"), true)
        }
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let e = ctx.err();
            let code = e.code().unwrap_or("");
            let msg = e.message().unwrap_or("");
            let (text, retryable) = match code {
                "NoSuchBucket" => ("the bucket does not exist (check S3_BUCKET)".to_string(), false),
                "AccessDenied" | "Forbidden" => ("access denied (check the credentials and the bucket policy)".to_string(), false),
                "InvalidAccessKeyId" => (
                    "the access key id is not known to the store (check S3_ACCESS_KEY_ID)".to_string(),
                    false,
                ),
                "SignatureDoesNotMatch" => (
                    "the request signature was rejected (check S3_SECRET_ACCESS_KEY and S3_REGION)".to_string(),
                    false,
                ),
                "PermanentRedirect" | "AuthorizationHeaderMalformed" | "IllegalLocationConstraintException" => {
                    (wrong_region(region_hint(ctx.raw(), msg)), false)
                }
                "NoSuchKey" | "NotFound" => return StorageError::NotFound(target.to_string()),
                "PreconditionFailed" | "ConditionalRequestConflict" => return StorageError::PreconditionFailed(target.to_string()),
                "SlowDown" | "ServiceUnavailable" | "InternalError" | "RequestTimeout" => {
                    (format!("the store is busy or failing ({code})"), true)
                }
                "InvalidRequest" if msg.contains("Content-MD5") => (
                    "the bucket requires Content-MD5 on writes: it has object lock with a default retention; set S3_OBJECT_LOCK_DAYS (pgvigil then sends it)".to_string(),
                    false,
                ),
                "NotImplemented" => (format!("the store does not implement this request ({code})"), false),
                c if c.contains("Checksum") || c == "BadDigest" || c == "InvalidDigest" => {
                    (format!("the store rejected the checksum scheme ({code}: {msg})"), false)
                }
                _ if status == 404 => return StorageError::NotFound(target.to_string()),
                _ if status == 412 || status == 409 => return StorageError::PreconditionFailed(target.to_string()),
                _ if status == 403 => ("access denied (check the credentials and the bucket policy)".to_string(), false),
                _ if status == 301 => (wrong_region(region_hint(ctx.raw(), msg)), false),
                _ => (
                    format!("HTTP {status} {code} {msg}").trim().to_string(),
                    status >= 500 || status == 429,
                ),
            };
            StorageError::other(format!("{op} {target}: {text}"), retryable)
        }
        _ => StorageError::other(format!("{op} {target}: {}", aws_sdk_s3::error::DisplayErrorContext(err)), true),
    }
}

/// The sentence for a bucket in another region than the one requests are signed for.
fn wrong_region(hint: Option<String>) -> String {
    match hint {
        Some(r) => format!("the bucket is in region {r}, not the configured one (set S3_REGION={r})"),
        None => "the bucket is in another region (check S3_REGION)".to_string(),
    }
}

/// The bucket's region as the store states it when a request went to the wrong one: AWS's
/// `x-amz-bucket-region` header, else `expecting '<region>'` in the message. The answer is
/// untrusted text, so only something shaped like a region name is taken.
pub(super) fn region_hint(raw: &HttpResponse, msg: &str) -> Option<String> {
    let from_header = raw.headers().get("x-amz-bucket-region").map(str::to_string);
    let from_message = || {
        let rest = msg.split("expecting '").nth(1)?;
        Some(rest.split('\'').next()?.to_string())
    };
    from_header.or_else(from_message).filter(|r| is_region_name(r))
}

/// `eu-central-1`, `auto`, `us-gov-west-1`: lower-case letters, digits and dashes, short.
pub(super) fn is_region_name(r: &str) -> bool {
    (1..=32).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::is_region_name;

    #[test]
    fn only_region_shaped_answers_are_taken() {
        for (text, ok) in [
            ("eu-central-1", true),
            ("auto", true),
            ("us-gov-west-1", true),
            ("", false),
            ("EU-CENTRAL-1", false),
            ("eu central", false),
            ("eu-central-1\nset S3_BUCKET", false),
            ("a-very-long-region-name-that-is-not-one", false),
        ] {
            assert_eq!(is_region_name(text), ok, "{text:?}");
        }
    }
}
