use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
pub use verinet_runtime::test_utils::*;
use verinet_primitives::{DType, ModelId, Tensor, TensorMap};
use verinet_runtime::{InferenceBackend, Runtime, RuntimeConfig, RuntimeError, TractBackend};

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// `models/digits-mlp.onnx`, made by `fixtures/digits/make_digits.py`.
pub fn digits_bytes() -> Vec<u8> {
    read(&repo_root().join("models/digits-mlp.onnx"))
}

/// `fixtures/digits/reference.json`: onnxruntime's outputs for the digits model.
pub fn digits_reference() -> Reference {
    parse_reference(&repo_root().join("fixtures/digits/reference.json"))
}

/// A model from `crates/runtime/tests/data` (made by `make_models.py` there).
pub fn data_model(name: &str) -> Vec<u8> {
    read(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data").join(name))
}

/// `$VERINET_TEST_MODELS/<name>`, the models `scripts/fetch_test_models.py` collects. Never
/// skipped: a missing directory is a broken test setup.
pub fn test_model_dir(name: &str) -> PathBuf {
    let dir = test_model_root().join(name);
    for file in ["model.onnx", "reference.json", "manifest.json"] {
        assert!(dir.join(file).is_file(), "{} is missing: {SETUP}", dir.join(file).display());
    }
    dir
}

const SETUP: &str = "run `python3 scripts/fetch_test_models.py target/test-models` and set \
                     VERINET_TEST_MODELS=$PWD/target/test-models (scripts/test.sh does both)";

/// `$VERINET_TEST_MODELS`; never skipped: unset is a broken test setup.
pub fn test_model_root() -> PathBuf {
    let Some(root) = std::env::var_os("VERINET_TEST_MODELS").filter(|v| !v.is_empty()) else {
        panic!("VERINET_TEST_MODELS is not set: {SETUP}");
    };
    PathBuf::from(root)
}

pub fn test_model(name: &str) -> (Vec<u8>, Reference) {
    let dir = test_model_dir(name);
    (read(&dir.join("model.onnx")), parse_reference(&dir.join("reference.json")))
}

/// The declared graph I/O that `fetch_test_models.py` writes: dims as numbers or names.
#[derive(Deserialize)]
pub struct Manifest {
    pub inputs: Vec<ManifestSpec>,
    pub outputs: Vec<ManifestSpec>,
}

#[derive(Deserialize)]
pub struct ManifestSpec {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<serde_json::Value>,
}

pub fn manifest(name: &str) -> Manifest {
    let path = test_model_dir(name).join("manifest.json");
    serde_json::from_slice(&read(&path)).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

pub fn tract_runtime(config: RuntimeConfig) -> Runtime {
    Runtime::new(Arc::new(TractBackend::new()), config)
}

pub fn id(bytes: &[u8]) -> ModelId {
    ModelId::of_bytes(bytes)
}

/// A loader that hands out `bytes`, as the hub's blob store would.
pub fn loader(bytes: &[u8]) -> impl FnOnce() -> std::future::Ready<Result<Vec<u8>, RuntimeError>> + use<> {
    let bytes = bytes.to_vec();
    move || std::future::ready(Ok(bytes))
}

/// A digits input of `batch` rows, pixels 0..16 as in the training data.
pub fn digits_input(batch: usize) -> TensorMap {
    let pixels: Vec<f32> = (0..batch * 64).map(|i| ((i * 7) % 17) as f32).collect();
    BTreeMap::from([("pixels".to_string(), Tensor::from_f32(vec![batch, 64], &pixels).expect("tensor"))])
}

pub fn dtype(name: &str) -> DType {
    name.parse().unwrap_or_else(|e| panic!("dtype {name}: {e}"))
}

/// Compiles `onnx` with `backend` directly, for tests of the backend alone.
pub fn prepare(backend: &dyn InferenceBackend, onnx: &[u8]) -> Arc<dyn verinet_runtime::Plan> {
    backend.prepare(onnx).unwrap_or_else(|e| panic!("{}: {e}", backend.name()))
}

pub type LoadFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<u8>, RuntimeError>> + Send>>;

/// A blob store stand-in that counts fetches and can be slow.
#[derive(Clone)]
pub struct Blobs {
    bytes: Arc<Vec<u8>>,
    fetches: Arc<std::sync::atomic::AtomicUsize>,
    delay: std::time::Duration,
}

impl Blobs {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self::slow(bytes, std::time::Duration::ZERO)
    }

    pub fn slow(bytes: Vec<u8>, delay: std::time::Duration) -> Self {
        Self { bytes: Arc::new(bytes), fetches: Default::default(), delay }
    }

    pub fn id(&self) -> ModelId {
        ModelId::of_bytes(&self.bytes)
    }

    pub fn loader(&self) -> impl FnOnce() -> LoadFuture + Send + use<> {
        let this = self.clone();
        move || {
            Box::pin(async move {
                this.fetches.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(this.delay).await;
                Ok(this.bytes.to_vec())
            })
        }
    }

    pub fn fetches(&self) -> usize {
        self.fetches.load(std::sync::atomic::Ordering::SeqCst)
    }
}
