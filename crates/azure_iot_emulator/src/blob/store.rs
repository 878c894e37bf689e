//! Blobs on disk: streamed in, committed by rename, never whole in memory.
//!
//! ```text
//! {root}/blobs/{container}/{h}.data   committed blob content      h = SHA-256 of the blob name (hex):
//! {root}/blobs/{container}/{h}.meta   {"name": …, "contentType": …}  any name, fixed-length file names
//! {root}/blocks/{container}/{h}/{id}  uncommitted blocks (id = hex of the block id)
//! {root}/tmp/                         writes in progress
//! ```
//!
//! Every write goes to a file in `tmp/` first and is renamed into place only when complete,
//! so a failed or interrupted upload (a dropped connection, a full disk, a body over the cap)
//! leaves nothing half-written visible: the old blob, if any, stays readable, and the partial
//! file is removed. Put Block List copies the listed blocks into one new file the same way,
//! then drops the blob's uncommitted blocks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::io::AsyncWriteExt;

/// The largest single Put Blob body.
pub(crate) const MAX_PUT_BLOB: u64 = 256 * 1024 * 1024;
/// The largest block.
pub(crate) const MAX_BLOCK: u64 = 100 * 1024 * 1024;
/// The most blocks one blob may have (Azure allows 50,000 committed).
pub(crate) const MAX_BLOCKS: usize = 50_000;
/// The largest blob Put Block List may commit.
pub(crate) const MAX_BLOB: u64 = 16 * 1024 * 1024 * 1024;
/// The longest block id (Azure: 64 bytes before base64).
const MAX_BLOCK_ID: usize = 128;

/// A failed blob operation: the storage error code, HTTP status and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlobError {
    /// HTTP status.
    pub(crate) status: u16,
    /// Azure Storage error code (`BlobNotFound`, `InvalidBlockList`, …).
    pub(crate) code: &'static str,
    /// What is wrong.
    pub(crate) message: String,
}

impl BlobError {
    pub(crate) fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }

    fn not_found(name: &str) -> Self {
        Self::new(
            404,
            "BlobNotFound",
            format!("the blob `{name}` does not exist"),
        )
    }

    fn io(what: &str, e: &std::io::Error) -> Self {
        tracing::warn!(error = %e, "blob storage: {what} failed");
        Self::new(
            500,
            "InternalError",
            format!("the blob store could not {what}: {e}"),
        )
    }
}

/// What the endpoint answers about a committed blob.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BlobProperties {
    /// The blob name (within its container).
    pub(crate) name: String,
    /// Size in bytes.
    pub(crate) size: u64,
    /// When it was last committed.
    pub(crate) last_modified: OffsetDateTime,
    /// Changes with every commit (quoted, as the `ETag` header carries it).
    pub(crate) etag: String,
    /// The content type given at upload, if any.
    pub(crate) content_type: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    name: String,
    #[serde(rename = "contentType", default)]
    content_type: Option<String>,
}

/// The blob files under one root directory.
#[derive(Debug)]
pub(crate) struct BlobFiles {
    root: PathBuf,
    /// Removed on drop when the root is a temporary directory (no data directory).
    temporary: bool,
    /// How long an upload may stall between two body chunks.
    idle_timeout: Duration,
    /// The largest Put Blob and Put Block bodies ([`MAX_PUT_BLOB`], [`MAX_BLOCK`]).
    max_put: u64,
    max_block: u64,
}

impl Drop for BlobFiles {
    fn drop(&mut self) {
        if self.temporary {
            let _ = std::fs::remove_dir_all(&self.root);
        }
    }
}

impl BlobFiles {
    /// Blob files under `{data_dir}/blobs-store`, or under a new temporary directory removed
    /// when the store is dropped.
    pub(crate) fn open(data_dir: Option<&Path>, idle_timeout: Duration) -> std::io::Result<Self> {
        let (root, temporary) = match data_dir {
            Some(dir) => (dir.join("blob-store"), false),
            None => (
                std::env::temp_dir().join(format!(
                    "azure-iot-emulator-blobs-{}",
                    uuid::Uuid::new_v4().simple()
                )),
                true,
            ),
        };
        private_dir_all_sync(&root.join("tmp"))?;
        // Partial writes of an earlier run.
        for entry in std::fs::read_dir(root.join("tmp"))?.flatten() {
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(Self {
            root,
            temporary,
            idle_timeout,
            max_put: MAX_PUT_BLOB,
            max_block: MAX_BLOCK,
        })
    }

    fn hash(name: &str) -> String {
        ring::digest::digest(&ring::digest::SHA256, name.as_bytes())
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    fn container_dir(&self, container: &str) -> PathBuf {
        self.root.join("blobs").join(Self::hash(container))
    }

    fn data_path(&self, container: &str, name: &str) -> PathBuf {
        self.container_dir(container)
            .join(format!("{}.data", Self::hash(name)))
    }

    fn meta_path(&self, container: &str, name: &str) -> PathBuf {
        self.container_dir(container)
            .join(format!("{}.meta", Self::hash(name)))
    }

    fn block_dir(&self, container: &str, name: &str) -> PathBuf {
        self.root
            .join("blocks")
            .join(Self::hash(container))
            .join(Self::hash(name))
    }

    fn temp_path(&self) -> PathBuf {
        self.root
            .join("tmp")
            .join(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Put Blob: streams `body` (at most [`MAX_PUT_BLOB`] bytes) into a new version of the
    /// blob.
    pub(crate) async fn put_blob(
        &self,
        container: &str,
        name: &str,
        content_type: Option<String>,
        body: axum::body::Body,
    ) -> Result<BlobProperties, BlobError> {
        let temp = self.temp_path();
        let written = self.stream_to(&temp, body, self.max_put).await;
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(e);
        }
        self.commit(container, name, content_type, &temp).await
    }

    /// Put Block: streams `body` (at most [`MAX_BLOCK`] bytes) into an uncommitted block.
    pub(crate) async fn put_block(
        &self,
        container: &str,
        name: &str,
        block_id: &str,
        body: axum::body::Body,
    ) -> Result<(), BlobError> {
        let id = block_file_name(block_id)?;
        let dir = self.block_dir(container, name);
        private_dir_all(&dir)
            .await
            .map_err(|e| BlobError::io("create a block directory", &e))?;
        let blocks = count_files(&dir).await;
        if blocks >= MAX_BLOCKS {
            return Err(BlobError::new(
                409,
                "BlockCountExceedsLimit",
                format!("the blob already has {MAX_BLOCKS} uncommitted blocks"),
            ));
        }
        let temp = self.temp_path();
        if let Err(e) = self.stream_to(&temp, body, self.max_block).await {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(e);
        }
        tokio::fs::rename(&temp, dir.join(id)).await.map_err(|e| {
            let _ = std::fs::remove_file(&temp);
            BlobError::io("store a block", &e)
        })
    }

    /// Put Block List: commits the blocks `ids` (in order) as the blob's new content and
    /// drops its other uncommitted blocks. A missing block is 400 `InvalidBlockList` and
    /// changes nothing.
    pub(crate) async fn put_block_list(
        &self,
        container: &str,
        name: &str,
        ids: &[String],
        content_type: Option<String>,
    ) -> Result<BlobProperties, BlobError> {
        if ids.len() > MAX_BLOCKS {
            return Err(BlobError::new(
                400,
                "BlockListTooLong",
                format!("a block list may name at most {MAX_BLOCKS} blocks"),
            ));
        }
        let dir = self.block_dir(container, name);
        let mut files = Vec::with_capacity(ids.len());
        let mut total = 0u64;
        for id in ids {
            let path = dir.join(block_file_name(id)?);
            let meta = tokio::fs::metadata(&path).await.map_err(|_| {
                BlobError::new(
                    400,
                    "InvalidBlockList",
                    format!("the block list names block `{id}`, which was not uploaded"),
                )
            })?;
            total += meta.len();
            files.push(path);
        }
        if total > MAX_BLOB {
            return Err(BlobError::new(
                413,
                "RequestBodyTooLarge",
                format!("the blob would be {total} bytes; the emulator stores at most {MAX_BLOB}"),
            ));
        }
        let temp = self.temp_path();
        let copied = async {
            let mut out = private_file(&temp)
                .await
                .map_err(|e| BlobError::io("create a blob file", &e))?;
            for path in &files {
                let mut block = tokio::fs::File::open(path)
                    .await
                    .map_err(|e| BlobError::io("read a block", &e))?;
                tokio::io::copy(&mut block, &mut out)
                    .await
                    .map_err(|e| BlobError::io("write a blob", &e))?;
            }
            out.sync_all()
                .await
                .map_err(|e| BlobError::io("write a blob", &e))
        }
        .await;
        if let Err(e) = copied {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(e);
        }
        let properties = self.commit(container, name, content_type, &temp).await?;
        let _ = tokio::fs::remove_dir_all(&dir).await;
        Ok(properties)
    }

    /// The blob's properties.
    pub(crate) async fn properties(
        &self,
        container: &str,
        name: &str,
    ) -> Result<BlobProperties, BlobError> {
        let data = tokio::fs::metadata(self.data_path(container, name))
            .await
            .map_err(|_| BlobError::not_found(name))?;
        let meta: Option<Meta> = tokio::fs::read(self.meta_path(container, name))
            .await
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok());
        Ok(properties_of(
            name.to_owned(),
            &data,
            meta.and_then(|m| m.content_type),
        ))
    }

    /// Opens the blob for reading, with its properties.
    pub(crate) async fn open_blob(
        &self,
        container: &str,
        name: &str,
    ) -> Result<(tokio::fs::File, BlobProperties), BlobError> {
        let file = tokio::fs::File::open(self.data_path(container, name))
            .await
            .map_err(|_| BlobError::not_found(name))?;
        let properties = self.properties(container, name).await?;
        Ok((file, properties))
    }

    /// Deletes the blob (and its uncommitted blocks).
    pub(crate) async fn delete(&self, container: &str, name: &str) -> Result<(), BlobError> {
        tokio::fs::remove_file(self.data_path(container, name))
            .await
            .map_err(|_| BlobError::not_found(name))?;
        let _ = tokio::fs::remove_file(self.meta_path(container, name)).await;
        let _ = tokio::fs::remove_dir_all(self.block_dir(container, name)).await;
        Ok(())
    }

    /// Every committed blob of `container`, by name.
    pub(crate) async fn list(&self, container: &str) -> Result<Vec<BlobProperties>, BlobError> {
        let mut out = Vec::new();
        let mut dir = match tokio::fs::read_dir(self.container_dir(container)).await {
            Ok(dir) => dir,
            Err(_) => return Ok(out),
        };
        while let Ok(Some(entry)) = dir.next_entry().await {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("meta") {
                continue;
            }
            let Some(meta) = tokio::fs::read(&path)
                .await
                .ok()
                .and_then(|bytes| serde_json::from_slice::<Meta>(&bytes).ok())
            else {
                continue;
            };
            if let Ok(properties) = self.properties(container, &meta.name).await {
                out.push(properties);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Makes the complete file `temp` (already on disk) the blob's content: metadata first,
    /// synced, then the data file by rename (the commit point), then the directory synced so
    /// that both renames survive a power loss.
    async fn commit(
        &self,
        container: &str,
        name: &str,
        content_type: Option<String>,
        temp: &Path,
    ) -> Result<BlobProperties, BlobError> {
        let committed = async {
            private_dir_all(&self.container_dir(container))
                .await
                .map_err(|e| BlobError::io("create a container directory", &e))?;
            let meta = serde_json::to_vec(&Meta {
                name: name.to_owned(),
                content_type: content_type.clone(),
            })
            .map_err(|e| BlobError::new(500, "InternalError", e.to_string()))?;
            let meta_temp = self.temp_path();
            let mut file = private_file(&meta_temp)
                .await
                .map_err(|e| BlobError::io("write blob metadata", &e))?;
            file.write_all(&meta)
                .await
                .map_err(|e| BlobError::io("write blob metadata", &e))?;
            file.sync_all()
                .await
                .map_err(|e| BlobError::io("write blob metadata", &e))?;
            tokio::fs::rename(&meta_temp, self.meta_path(container, name))
                .await
                .map_err(|e| BlobError::io("write blob metadata", &e))?;
            tokio::fs::rename(temp, self.data_path(container, name))
                .await
                .map_err(|e| BlobError::io("commit a blob", &e))?;
            let dir = tokio::fs::File::open(self.container_dir(container))
                .await
                .map_err(|e| BlobError::io("commit a blob", &e))?;
            dir.sync_all()
                .await
                .map_err(|e| BlobError::io("commit a blob", &e))
        }
        .await;
        if let Err(e) = committed {
            let _ = tokio::fs::remove_file(temp).await;
            return Err(e);
        }
        self.properties(container, name).await
    }

    /// Writes `body` to a new file at `path`, chunk by chunk: at most `limit` bytes, each
    /// chunk within the idle timeout. Flushed to disk before it returns.
    async fn stream_to(
        &self,
        path: &Path,
        mut body: axum::body::Body,
        limit: u64,
    ) -> Result<u64, BlobError> {
        let mut file = private_file(path)
            .await
            .map_err(|e| BlobError::io("create a blob file", &e))?;
        let mut total = 0u64;
        loop {
            let frame = match tokio::time::timeout(self.idle_timeout, body.frame()).await {
                Err(_) => {
                    return Err(BlobError::new(
                        408,
                        "OperationTimedOut",
                        format!(
                            "the request body stalled for more than {:?}",
                            self.idle_timeout
                        ),
                    ));
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    return Err(BlobError::new(
                        400,
                        "InvalidInput",
                        format!("the request body could not be read: {e}"),
                    ));
                }
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data): Result<Bytes, _> = frame.into_data() else {
                continue;
            };
            total += data.len() as u64;
            if total > limit {
                return Err(BlobError::new(
                    413,
                    "RequestBodyTooLarge",
                    format!("the request body exceeds the emulator's limit of {limit} bytes"),
                ));
            }
            file.write_all(&data)
                .await
                .map_err(|e| BlobError::io("write a blob", &e))?;
        }
        file.sync_all()
            .await
            .map_err(|e| BlobError::io("write a blob", &e))?;
        Ok(total)
    }
}

/// Bytes read from disk per chunk of a streamed answer.
const READ_CHUNK: usize = 64 * 1024;

/// A response body that streams `file` (a blob file, or a range of one) from disk, a chunk at
/// a time.
pub(crate) fn file_body(
    file: impl tokio::io::AsyncRead + Send + Unpin + 'static,
) -> axum::body::Body {
    let stream = futures_util::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut chunk = vec![0u8; READ_CHUNK];
        match tokio::io::AsyncReadExt::read(&mut file, &mut chunk).await {
            Ok(0) => None,
            Ok(n) => {
                chunk.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    axum::body::Body::from_stream(stream)
}

fn properties_of(
    name: String,
    data: &std::fs::Metadata,
    content_type: Option<String>,
) -> BlobProperties {
    let modified = data
        .modified()
        .ok()
        .map(OffsetDateTime::from)
        .unwrap_or_else(OffsetDateTime::now_utc);
    BlobProperties {
        name,
        size: data.len(),
        etag: format!(
            "\"0x{:X}{:X}\"",
            modified.unix_timestamp_nanos(),
            data.len()
        ),
        last_modified: modified,
        content_type,
    }
}

/// The file name of a block: its id's bytes in hex. An empty or overlong id is 400.
fn block_file_name(block_id: &str) -> Result<String, BlobError> {
    if block_id.is_empty() || block_id.len() > MAX_BLOCK_ID {
        return Err(BlobError::new(
            400,
            "InvalidQueryParameterValue",
            format!("blockid must be 1 to {MAX_BLOCK_ID} characters"),
        ));
    }
    Ok(block_id.bytes().map(|b| format!("{b:02x}")).collect())
}

/// Creates `dir` and its parents, readable by the owner only (blobs are the users' data).
fn private_dir_all_sync(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

async fn private_dir_all(dir: &Path) -> std::io::Result<()> {
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || private_dir_all_sync(&dir))
        .await
        .map_err(std::io::Error::other)?
}

/// Creates (or truncates) `path`, readable and writable by the owner only.
async fn private_file(path: &Path) -> std::io::Result<tokio::fs::File> {
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    options.mode(0o600);
    options.open(path).await
}

async fn count_files(dir: &Path) -> usize {
    let mut n = 0;
    if let Ok(mut entries) = tokio::fs::read_dir(dir).await {
        while let Ok(Some(_)) = entries.next_entry().await {
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files() -> BlobFiles {
        BlobFiles::open(None, Duration::from_secs(5)).unwrap()
    }

    #[tokio::test]
    async fn blocks_commit_in_list_order_and_a_missing_block_changes_nothing() {
        let f = files();
        f.put_block("c", "d/x", "AA==", axum::body::Body::from("hello "))
            .await
            .unwrap();
        f.put_block("c", "d/x", "AQ==", axum::body::Body::from("world"))
            .await
            .unwrap();
        let e = f
            .put_block_list("c", "d/x", &["AA==".into(), "Ag==".into()], None)
            .await
            .unwrap_err();
        assert_eq!(e.code, "InvalidBlockList");
        assert!(f.properties("c", "d/x").await.is_err(), "nothing visible");
        let p = f
            .put_block_list("c", "d/x", &["AA==".into(), "AQ==".into()], None)
            .await
            .unwrap();
        assert_eq!(p.size, 11);
        let (mut file, _) = f.open_blob("c", "d/x").await.unwrap();
        let mut text = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut file, &mut text)
            .await
            .unwrap();
        assert_eq!(text, "hello world");
        let listed = f.list("c").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "d/x");
        f.delete("c", "d/x").await.unwrap();
        assert!(f.list("c").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_oversized_put_leaves_the_old_blob_and_no_partial_file() {
        let mut f = files();
        f.max_put = 8;
        f.max_block = 8;
        f.put_blob("c", "b", None, axum::body::Body::from("old"))
            .await
            .unwrap();
        let big = || axum::body::Body::from(vec![0u8; 9]);
        let e = f.put_blob("c", "b", None, big()).await.unwrap_err();
        assert_eq!(e.status, 413);
        let e = f.put_block("c", "b", "AA==", big()).await.unwrap_err();
        assert_eq!(e.status, 413);
        assert_eq!(f.properties("c", "b").await.unwrap().size, 3);
        assert_eq!(count_files(&f.root.join("tmp")).await, 0);
    }
}
