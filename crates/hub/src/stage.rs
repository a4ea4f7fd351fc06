use std::path::Path;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use tempfile::TempPath;
use tokio::io::AsyncWriteExt;
use verinet_primitives::{ModelId, Sha256Hasher};

use crate::{HubError, Result};

/// An upload written to a temporary file, hashed on the way. Deleted on drop unless stored.
#[derive(Debug)]
pub struct Staged {
    /// The temporary file (removed when dropped).
    pub path: TempPath,
    /// Hash of its bytes.
    pub id: ModelId,
    /// Its size.
    pub size: u64,
}

/// Streams `body` into a new file under `dir`, hashing as it goes and refusing more than
/// `limit` bytes, so no upload is ever held whole in memory.
pub(crate) async fn stage<S, E>(dir: &Path, limit: u64, body: S) -> Result<Staged>
where
    S: Stream<Item = std::result::Result<Bytes, E>>,
    E: std::fmt::Display,
{
    tokio::fs::create_dir_all(dir).await?;
    let path = tempfile::Builder::new().prefix("upload-").suffix(".onnx").tempfile_in(dir)?.into_temp_path();
    let mut file = tokio::io::BufWriter::with_capacity(1 << 20, tokio::fs::File::create(&path).await?);
    let mut hasher = Sha256Hasher::new();
    let mut size = 0u64;
    futures::pin_mut!(body);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| HubError::Upload(e.to_string()))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(HubError::TooLarge { limit });
        }
        hasher.update(&chunk);
        file.write_all(&chunk).await?;
    }
    file.flush().await?;
    file.into_inner().sync_all().await?;
    if size == 0 {
        return Err(HubError::Empty);
    }
    Ok(Staged { path, id: hasher.finish(), size })
}
