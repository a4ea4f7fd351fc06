//! The blob store over a local directory and over memory: the same checks for both.

use std::{io::Write, path::Path, sync::Arc};

use futures::TryStreamExt;
use object_store::memory::InMemory;
use verinet_primitives::{ModelId, Sha256Hasher};
use verinet_store::{BlobStore, ObjectBlobStore, StoreError};

fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> (ModelId, std::path::PathBuf) {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    (ModelId::of_bytes(bytes), path)
}

async fn round_trip_and_idempotence(store: Arc<dyn BlobStore>) {
    let tmp = tempfile::tempdir().unwrap();
    let (id, path) = write_file(tmp.path(), "model.onnx", b"onnx bytes");
    assert!(!store.exists(&id).await.unwrap());
    store.put_file(&id, &path).await.unwrap();
    assert!(store.exists(&id).await.unwrap());
    assert!(path.exists(), "the caller keeps its file");
    assert_eq!(&store.get(&id).await.unwrap()[..], b"onnx bytes");
    let (size, stream) = store.stream(&id).await.unwrap();
    assert_eq!(size, 10);
    let chunks: Vec<bytes::Bytes> = stream.try_collect().await.unwrap();
    assert_eq!(chunks.concat(), b"onnx bytes");

    // Idempotent: an existing id is kept and the new file is not even read.
    store.put_file(&id, &path).await.unwrap();
    store.put_file(&id, &tmp.path().join("gone.onnx")).await.unwrap();
    assert_eq!(&store.get(&id).await.unwrap()[..], b"onnx bytes");

    // Empty objects are objects too.
    let (empty, empty_path) = write_file(tmp.path(), "empty", b"");
    store.put_file(&empty, &empty_path).await.unwrap();
    assert_eq!(store.get(&empty).await.unwrap().len(), 0);
}

async fn absent_is_not_found(store: Arc<dyn BlobStore>) {
    let id = ModelId::of_bytes(b"never stored");
    assert!(!store.exists(&id).await.unwrap());
    assert!(matches!(store.get(&id).await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.stream(&id).await, Err(StoreError::NotFound(_))));
    let tmp = tempfile::tempdir().unwrap();
    let missing = store.put_file(&id, &tmp.path().join("missing")).await;
    assert!(matches!(missing, Err(StoreError::Io(_))), "{missing:?}");
    assert!(!store.exists(&id).await.unwrap(), "a failed put leaves nothing behind");
}

/// 20 MiB: several upload parts, streamed back in chunks and hashed on the fly.
async fn large_file_streams(store: Arc<dyn BlobStore>, chunked: bool) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("large.onnx");
    let mut hasher = Sha256Hasher::new();
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut block = vec![0u8; 1 << 16];
        for _ in 0..(20 << 20) / block.len() {
            for b in block.iter_mut() {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
            hasher.update(&block);
            f.write_all(&block).unwrap();
        }
    }
    let id = hasher.finish();
    store.put_file(&id, &path).await.unwrap();

    let (size, mut stream) = store.stream(&id).await.unwrap();
    assert_eq!(size, 20 << 20);
    let (mut seen, mut chunks, mut check) = (0u64, 0, Sha256Hasher::new());
    while let Some(chunk) = stream.try_next().await.unwrap() {
        seen += chunk.len() as u64;
        chunks += 1;
        check.update(&chunk);
    }
    assert_eq!(seen, size);
    // Memory already holds the object whole; a file is read back in chunks.
    if chunked {
        assert!(chunks > 1, "streamed in chunks, not as one buffer");
    }
    assert_eq!(check.finish(), id);
    assert_eq!(ModelId::of_bytes(&store.get(&id).await.unwrap()), id);
}

async fn concurrent_puts_of_one_id(store: Arc<dyn BlobStore>) {
    let tmp = tempfile::tempdir().unwrap();
    let bytes = vec![7u8; 3 << 20];
    let (id, path) = write_file(tmp.path(), "same", &bytes);
    let puts = (0..4).map(|_| {
        let (store, path) = (store.clone(), path.clone());
        tokio::spawn(async move { store.put_file(&id, &path).await })
    });
    for p in futures::future::join_all(puts).await {
        p.unwrap().unwrap();
    }
    assert_eq!(store.get(&id).await.unwrap(), bytes);
}

macro_rules! blob_tests {
    ($module:ident, $make:expr, chunked: $chunked:expr) => {
        mod $module {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn round_trip_and_idempotence() {
                let (_dir, store) = $make;
                super::round_trip_and_idempotence(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn absent_is_not_found() {
                let (_dir, store) = $make;
                super::absent_is_not_found(store).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn large_file_streams() {
                let (_dir, store) = $make;
                super::large_file_streams(store, $chunked).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_puts_of_one_id() {
                let (_dir, store) = $make;
                super::concurrent_puts_of_one_id(store).await;
            }
        }
    };
}

fn local() -> (tempfile::TempDir, Arc<dyn BlobStore>) {
    let dir = tempfile::tempdir().unwrap();
    let store = ObjectBlobStore::local(&dir.path().join("blobs")).unwrap();
    (dir, Arc::new(store))
}

fn memory() -> ((), Arc<dyn BlobStore>) {
    ((), Arc::new(ObjectBlobStore::new(Arc::new(InMemory::new()))))
}

blob_tests!(local_dir, local(), chunked: true);
blob_tests!(in_memory, memory(), chunked: false);

#[tokio::test]
async fn local_layout_is_sha256_hex() {
    let (dir, store) = local();
    let tmp = tempfile::tempdir().unwrap();
    let (id, path) = write_file(tmp.path(), "m", b"layout");
    store.put_file(&id, &path).await.unwrap();
    let on_disk = dir.path().join("blobs").join("sha256").join(id.hex());
    assert_eq!(std::fs::read(on_disk).unwrap(), b"layout");
}
