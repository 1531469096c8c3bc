//! Frame stores on S3-compatible object storage (the `s3` feature): the one module that
//! knows object_store. beamdb's code is synchronous; a small tokio runtime of this module's
//! own drives object_store's async client, and every call here blocks until it is done.
//!
//! Object stores have no rename and no fsync, so a run's atomicity rests on names instead
//! (docs/s3.md): each ingest of a run writes a version of its own, the group
//! `runs/{uid}@{version}` (`@` is never part of a safe name, so the uid is unambiguous; it
//! is also kept as it is in keys and `s3://` URLs, where object_store would encode `~`), and
//! the beamtime's SQLite commit that records that group is the switch. A group that no
//! committed row names is a leftover, whatever state it is in, and is collected by the next
//! ingest of that run or by `verify --repair`.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, RetryConfig};

use super::StoreError;
use crate::settings::S3Settings;

/// Requests that fail for a reason worth retrying (a network error, a 5xx, a timeout) are
/// retried with exponential backoff, within this many attempts and this much time; then the
/// run is rejected whole. Long enough to ride out a server restart, short enough that an
/// ingest against a server that is gone ends within a minute.
const MAX_RETRIES: usize = 6;
const RETRY_TIMEOUT: Duration = Duration::from_secs(45);

/// The variables credentials may come from (never from a settings file).
const CREDENTIAL_VARIABLES: [&str; 2] = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];

/// A connection to the bucket of `[frames] url`.
pub struct Remote {
    store: Arc<AmazonS3>,
    runtime: tokio::runtime::Runtime,
    settings: S3Settings,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the client itself: it holds the credentials.
        write!(f, "Remote({})", self.settings.url())
    }
}

impl Remote {
    /// Connects to the bucket of `settings` (no request yet: see [`Remote::check`]).
    /// Missing credentials are a settings error (exit 2) naming the variables, rather than a
    /// wait for an instance-metadata service that a beamline host does not have.
    pub fn connect(settings: &S3Settings) -> Result<Arc<Remote>, StoreError> {
        let has_keys = CREDENTIAL_VARIABLES
            .iter()
            .all(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
        let has_other = [
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|s| !s.is_empty()));
        if !has_keys && !has_other {
            return Err(StoreError::RemoteSetup {
                url: settings.url(),
                setting: "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                why: "no S3 credentials: beamdb takes them only from the standard AWS variables; export both (or AWS_WEB_IDENTITY_TOKEN_FILE) before running it".into(),
            });
        }
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(&settings.bucket)
            .with_allow_http(settings.allow_http)
            .with_retry(RetryConfig {
                max_retries: MAX_RETRIES,
                retry_timeout: RETRY_TIMEOUT,
                ..RetryConfig::default()
            });
        if let Some(endpoint) = &settings.endpoint {
            builder = builder.with_endpoint(endpoint);
        }
        if let Some(region) = &settings.region {
            builder = builder.with_region(region);
        } else if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            builder = builder.with_region("us-east-1");
        }
        let store = builder.build().map_err(|e| StoreError::RemoteSetup {
            url: settings.url(),
            setting: "[frames]",
            why: format!("cannot set up the S3 client: {}", scrub(&e.to_string())),
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("beamdb-s3")
            .enable_all()
            .build()
            .map_err(|source| StoreError::Io {
                path: std::path::PathBuf::from(settings.url()),
                action: "cannot start the S3 client's runtime",
                source,
            })?;
        Ok(Arc::new(Remote {
            store: Arc::new(store),
            runtime,
            settings: settings.clone(),
        }))
    }

    /// The key of beamtime `id`'s store: `{prefix}/{id}/frames.zarr`.
    pub fn store_key(&self, id: &str) -> String {
        if self.settings.prefix.is_empty() {
            format!("{id}/frames.zarr")
        } else {
            format!("{}/{id}/frames.zarr", self.settings.prefix)
        }
    }

    /// `s3://bucket/{key}`: what users and zarr-python are given (no credentials in it).
    pub fn url_of(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.settings.bucket)
    }

    /// One request that proves the bucket is there and the credentials are good: a missing
    /// bucket or refused credentials are settings errors (exit 2) naming what to fix; a
    /// server that cannot be reached is a runtime failure (exit 1), after the retries.
    pub fn check(&self, key: &str) -> Result<(), StoreError> {
        let prefix = Key::from(key);
        let listed = self
            .runtime
            .block_on(self.store.list_with_delimiter(Some(&prefix)));
        let Err(list_error) = listed else {
            return Ok(());
        };
        // The bucket is missing only when the listing itself says so (a 404, or the S3
        // error code NoSuchBucket): a listing that failed for another reason (a 5xx after
        // the retries, a network fault) says nothing about the bucket, and a HEAD of a key
        // a brand-new store does not have yet would be a 404 whether or not it exists.
        // Refused credentials: the listing's own 403, or a HEAD's (which has a kind).
        let code = s3_code(&list_error.to_string());
        let missing = matches!(list_error, object_store::Error::NotFound { .. })
            || code.as_deref() == Some("NoSuchBucket");
        let refused = matches!(
            list_error,
            object_store::Error::PermissionDenied { .. }
                | object_store::Error::Unauthenticated { .. }
        ) || matches!(
            code.as_deref(),
            Some("AccessDenied" | "InvalidAccessKeyId" | "SignatureDoesNotMatch")
        );
        let probe = format!("{key}/zarr.json");
        let probed = if missing || refused {
            None
        } else {
            self.runtime
                .block_on(self.store.head(&Key::from(probe.as_str())))
                .err()
        };
        let refused = refused
            || matches!(
                probed,
                Some(
                    object_store::Error::PermissionDenied { .. }
                        | object_store::Error::Unauthenticated { .. }
                )
            );
        match () {
            () if missing => Err(StoreError::RemoteSetup {
                url: self.settings.url(),
                setting: "[frames] url",
                why: format!(
                    "bucket {} does not exist on {}; create it, or fix the bucket in frames.url ({}:{})",
                    self.settings.bucket,
                    self.endpoint(),
                    self.settings.at.file.display(),
                    self.settings.at.line
                ),
            }),
            () if refused => Err(StoreError::RemoteSetup {
                url: self.settings.url(),
                setting: "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                why: format!(
                    "{} refused the credentials for bucket {} (wrong key or secret, or no access to the bucket); check the AWS variables",
                    self.endpoint(),
                    self.settings.bucket
                ),
            }),
            () => Err(self.failed("cannot reach the bucket", key, list_error)),
        }
    }

    fn endpoint(&self) -> String {
        self.settings
            .endpoint
            .clone()
            .unwrap_or_else(|| "AWS S3".into())
    }

    fn failed(&self, action: &'static str, key: &str, source: object_store::Error) -> StoreError {
        StoreError::Remote {
            url: self.url_of(key),
            action,
            message: scrub(&source.to_string()),
        }
    }

    /// Stores `bytes` as object `key`, whole (an S3 PUT is atomic: readers see the whole
    /// object or none).
    pub fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StoreError> {
        self.runtime
            .block_on(self.store.put(&Key::from(key), PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(|e| self.failed("cannot write", key, e))
    }

    /// Object `key`'s bytes; `None` when there is no such object.
    pub fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let got = self.runtime.block_on(async {
            match self.store.get(&Key::from(key)).await {
                Ok(result) => result.bytes().await.map(Some),
                Err(object_store::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e),
            }
        });
        got.map(|b| b.map(|b| b.to_vec()))
            .map_err(|e| self.failed("cannot read", key, e))
    }

    /// Whether object `key` exists.
    pub fn exists(&self, key: &str) -> Result<bool, StoreError> {
        match self.runtime.block_on(self.store.head(&Key::from(key))) {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.failed("cannot look up", key, e)),
        }
    }

    /// The names of the "folders" directly under `key` (common prefixes), sorted.
    pub fn list_dirs(&self, key: &str) -> Result<Vec<String>, StoreError> {
        let listed = self
            .runtime
            .block_on(self.store.list_with_delimiter(Some(&Key::from(key))))
            .map_err(|e| self.failed("cannot list", key, e))?;
        let mut names: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Every object key under `key/` (recursively).
    pub fn list_keys(&self, key: &str) -> Result<Vec<String>, StoreError> {
        let prefix = Key::from(key);
        let keys: Result<Vec<String>, object_store::Error> = self.runtime.block_on(async {
            let mut stream = self.store.list(Some(&prefix));
            let mut keys = Vec::new();
            while let Some(meta) = stream.next().await {
                keys.push(meta?.location.to_string());
            }
            Ok(keys)
        });
        keys.map_err(|e| self.failed("cannot list", key, e))
    }

    /// Deletes every object under `key/`. Returns how many there were.
    pub fn delete_prefix(&self, key: &str) -> Result<usize, StoreError> {
        let keys = self.list_keys(key)?;
        let n = keys.len();
        let locations = futures_util::stream::iter(keys.into_iter().map(|k| Ok(Key::from(k))));
        let deleted: Result<(), object_store::Error> = self.runtime.block_on(async {
            let mut stream = self.store.delete_stream(locations.boxed());
            while let Some(done) = stream.next().await {
                match done {
                    Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        });
        deleted.map_err(|e| self.failed("cannot delete", key, e))?;
        Ok(n)
    }

    /// A zarrs storage over the objects under `key/` (a store's root), for reading arrays
    /// (verify --deep, export).
    pub fn zarrs_storage(&self, key: &str) -> zarrs::storage::ReadableStorage {
        let prefixed = object_store::prefix::PrefixStore::new(self.store.clone(), key);
        let store = zarrs_object_store::AsyncObjectStore::new(prefixed);
        Arc::new(
            zarrs::storage::storage_adapter::async_to_sync::AsyncToSyncStorageAdapter::new(
                Arc::new(store),
                TokioBlockOn(self.runtime.handle().clone()),
            ),
        )
    }
}

/// zarrs' bridge from its synchronous API to the async store: this module's runtime.
#[derive(Clone)]
struct TokioBlockOn(tokio::runtime::Handle);

impl zarrs::storage::storage_adapter::async_to_sync::AsyncToSyncBlockOn for TokioBlockOn {
    fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.0.block_on(future)
    }
}

/// A client message as users see it: the request and the status, and of a response body
/// only the S3 error's `<Code>` and `<Message>` (a body may carry anything: request ids,
/// a proxy's page, text a gateway echoes back); anything that looks like a signed URL's
/// credential part (`X-Amz-...`, any case) is cut out.
fn scrub(message: &str) -> String {
    // object_store: "... Server returned non-2xx status code: 503 Service Unavailable: BODY".
    let (head, body) = match message.find("status code: ") {
        Some(at) => match message[at + 13..].find(": ") {
            Some(end) => message.split_at(at + 13 + end),
            None => (message, ""),
        },
        None => match message.find('<') {
            Some(at) => message.split_at(at),
            None => (message, ""),
        },
    };
    let mut scrubbed = head
        .split_whitespace()
        .map(|word| match word.to_ascii_lowercase().find("x-amz-") {
            Some(at) => format!("{}…", &word[..at]),
            None => word.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(code) = s3_error_field(body, "Code") {
        scrubbed.push_str(&format!(" (S3 error {code}"));
        if let Some(text) = s3_error_field(body, "Message") {
            scrubbed.push_str(&format!(": {text}"));
        }
        scrubbed.push(')');
    }
    scrubbed
}

/// The text of the first `<{field}>` element of an S3 error body, if it is short plain text.
fn s3_error_field(body: &str, field: &str) -> Option<String> {
    let start = body.find(&format!("<{field}>"))? + field.len() + 2;
    let end = start + body[start..].find(&format!("</{field}>"))?;
    let text = body[start..end].trim();
    (!text.is_empty() && text.len() <= 200 && !text.contains('<'))
        .then(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// The S3 error code a failed request's message carries, if any.
fn s3_code(message: &str) -> Option<String> {
    s3_error_field(message, "Code")
}

/// The run group name of a version of run `uid`: `{uid}@{version}`.
pub fn group_name(uid: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    // Unique per process and moment; two ingests of one uid also hold its run lock.
    format!("{uid}@{nanos:x}{:x}", std::process::id())
}
