//! Client setup: endpoint, credentials, addressing, and the retry, timeout, stall and checksum
//! settings that real S3-compatible stores need.

use super::S3Storage;
use crate::infra::config::S3Config;
use crate::infra::storage::Result;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation, StalledStreamProtectionConfig};
use aws_sdk_s3::Client;
use secrecy::ExposeSecret;
use std::time::Duration;

impl S3Storage {
    /// Configures the client. No request is made here; use [`super::preflight`] to test access.
    ///
    /// # Errors
    /// Never at present; kept fallible for future credential providers.
    pub async fn new(cfg: &S3Config) -> Result<Self> {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).region(Region::new(cfg.region.clone()));
        if let Some((id, secret)) = &cfg.credentials {
            loader = loader.credentials_provider(Credentials::new(
                id.clone(),
                secret.expose_secret().to_string(),
                None,
                None,
                "pgvigil-env",
            ));
        }
        if let Some(endpoint) = &cfg.endpoint {
            loader = loader.endpoint_url(endpoint.clone());
        }
        let sdk = loader.load().await;
        let conf = aws_sdk_s3::config::Builder::from(&sdk)
            .force_path_style(cfg.force_path_style)
            // Newer SDK defaults add CRC checksums that several compatible stores reject.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(5)
                    .with_initial_backoff(Duration::from_millis(500))
                    .with_max_backoff(Duration::from_secs(20)),
            )
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(600))
                    .build(),
            )
            // A slow link must not cut an upload: allow long stalls before giving up.
            .stalled_stream_protection(
                StalledStreamProtectionConfig::enabled()
                    .grace_period(Duration::from_secs(60))
                    .build(),
            )
            .build();
        Ok(Self {
            client: Client::from_conf(conf),
            bucket: cfg.bucket.clone(),
            cfg: cfg.clone(),
        })
    }

    /// The bucket's own region when requests signed for the configured one are refused with an
    /// answer naming it (AWS, and stores that say `expecting '<region>'`); `None` when the
    /// region is right, or the store cannot be asked (then the first real request says why).
    /// One listing request of at most one key, not retried.
    pub async fn bucket_region(&self) -> Option<String> {
        let answer = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .max_keys(1)
            .customize()
            .config_override(aws_sdk_s3::config::Builder::new().retry_config(RetryConfig::disabled()))
            .send()
            .await;
        match answer {
            Err(aws_sdk_s3::error::SdkError::ServiceError(ctx)) => {
                let msg = aws_sdk_s3::error::ProvideErrorMetadata::message(ctx.err()).unwrap_or("");
                super::errors::region_hint(ctx.raw(), msg).filter(|r| *r != self.cfg.region)
            }
            _ => None,
        }
    }
}
