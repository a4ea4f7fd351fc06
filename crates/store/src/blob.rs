use std::{path::Path, sync::Arc};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use futures::{StreamExt, TryStreamExt, stream::BoxStream};
use object_store::{ObjectStore, WriteMultipart, local::LocalFileSystem, path::Path as ObjectPath};
use tokio::io::AsyncReadExt;
use verinet_primitives::ModelId;

use crate::{Result, StoreError};

/// Content-addressed model bytes: an object is stored under the [`ModelId`] of its bytes, so
/// identical bytes are stored once and an object never changes.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Stores a fully written local file, already hashed to `id`, streaming it (never whole in
    /// memory). The file is copied, the caller still owns it. Idempotent: if `id` exists it is
    /// kept and the file is not read.
    async fn put_file(&self, id: &ModelId, path: &Path) -> Result<()>;

    /// Whether an object is stored under `id`.
    async fn exists(&self, id: &ModelId) -> Result<bool>;

    /// The whole object; [`StoreError::NotFound`] if absent.
    async fn get(&self, id: &ModelId) -> Result<Bytes>;

    /// The object's size and its bytes as a stream of chunks; [`StoreError::NotFound`] if absent.
    async fn stream(&self, id: &ModelId) -> Result<(u64, BoxStream<'static, Result<Bytes>>)>;
}

/// A [`BlobStore`] over any `object_store` backend: a local directory, S3-compatible storage,
/// or memory in tests. Objects live under `sha256/<hex>`.
#[derive(Debug, Clone)]
pub struct ObjectBlobStore {
    store: Arc<dyn ObjectStore>,
}

/// Upload part size: S3's minimum, and the most a put holds in memory per part in flight.
const PART_SIZE: usize = 8 << 20;
/// Parts uploaded concurrently.
const PARTS_IN_FLIGHT: usize = 2;

impl ObjectBlobStore {
    /// A store in a local directory, created if missing.
    pub fn local(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir)?;
        Ok(Self::new(Arc::new(LocalFileSystem::new_with_prefix(dir)?)))
    }

    /// A store over any `object_store` backend.
    pub fn new(store: Arc<dyn ObjectStore>) -> Self {
        Self { store }
    }

    fn key(id: &ModelId) -> ObjectPath {
        ObjectPath::from(format!("sha256/{}", id.hex()))
    }

    async fn upload(&self, key: &ObjectPath, path: &Path) -> Result<()> {
        let mut file = tokio::fs::File::open(path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(self.store.put_multipart(key).await?, PART_SIZE);
        let copied: Result<()> = async {
            let mut buf = BytesMut::with_capacity(1 << 20);
            loop {
                buf.reserve(1 << 20);
                if file.read_buf(&mut buf).await? == 0 {
                    return Ok(());
                }
                writer.wait_for_capacity(PARTS_IN_FLIGHT).await?;
                writer.put(buf.split().freeze());
            }
        }
        .await;
        match copied {
            Ok(()) => {
                writer.finish().await?;
                Ok(())
            }
            Err(e) => {
                // Best effort: the partial upload must not linger, but the copy error matters more.
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(%abort, "aborting a failed blob upload");
                }
                Err(e)
            }
        }
    }
}

#[async_trait]
impl BlobStore for ObjectBlobStore {
    #[tracing::instrument(level = "debug", skip(self, path), fields(id = %id))]
    async fn put_file(&self, id: &ModelId, path: &Path) -> Result<()> {
        if self.exists(id).await? {
            return Ok(());
        }
        // Concurrent puts of one id may both upload; each completes atomically and the bytes
        // are identical, so whichever lands last changes nothing.
        self.upload(&Self::key(id), path).await
    }

    async fn exists(&self, id: &ModelId) -> Result<bool> {
        match self.store.head(&Self::key(id)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn get(&self, id: &ModelId) -> Result<Bytes> {
        Ok(self.store.get(&Self::key(id)).await.map_err(|e| not_found(e, id))?.bytes().await?)
    }

    async fn stream(&self, id: &ModelId) -> Result<(u64, BoxStream<'static, Result<Bytes>>)> {
        let got = self.store.get(&Self::key(id)).await.map_err(|e| not_found(e, id))?;
        let size = got.meta.size;
        Ok((size, got.into_stream().map_err(StoreError::from).boxed()))
    }
}

fn not_found(e: object_store::Error, id: &ModelId) -> StoreError {
    match e {
        object_store::Error::NotFound { .. } => StoreError::NotFound(format!("blob {id}")),
        e => e.into(),
    }
}
