//! The onnxruntime backend: Microsoft's runtime, loaded from `libonnxruntime` at run time (no
//! link-time dependency), the faster engine where it is installed and a second, independent
//! implementation for validators.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};

use ort::environment::Environment;
use ort::session::Session;
use ort::value::{DynValue, PrimitiveTensorElementType, Tensor as OrtTensor, TensorElementType, ValueType};
use verinet_primitives::{DType, Dim, IoSignature, Tensor, TensorMap, TensorSpec};

use crate::{InferenceBackend, Plan, Result, RuntimeError, graph};

#[cfg(not(target_endian = "little"))]
compile_error!("verinet-runtime copies tensor bytes as they are and needs a little-endian target");

/// onnxruntime allows one environment per process, tied to the first library loaded.
static ENVIRONMENT: Mutex<Option<(Environment, PathBuf)>> = Mutex::new(None);

/// Where onnxruntime can be loaded from, and how it was found, in this order: `configured`, the
/// `ORT_DYLIB_PATH` environment variable, and the `capi/` folder of the `onnxruntime` Python
/// package that `python3` imports (`pip install onnxruntime`), if any. `None` when none of them
/// names an existing file.
pub fn find_onnxruntime(configured: Option<&Path>) -> Option<(PathBuf, &'static str)> {
    if let Some(p) = configured {
        return Some((p.to_path_buf(), "config"));
    }
    if let Some(p) = std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()) {
        return Some((PathBuf::from(p), "ORT_DYLIB_PATH"));
    }
    const PROBE: &str = "import glob, os, onnxruntime\n\
        libs = sorted(glob.glob(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi', 'libonnxruntime.so*')))\n\
        print(libs[0] if libs else '')";
    let out = std::process::Command::new("python3")
        .args(["-c", PROBE])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    path.is_file().then_some((path, "the onnxruntime Python package"))
}

/// Runs models with ONNX Runtime, loaded dynamically from `libonnxruntime.so` (ONNX Runtime 1.31
/// or newer: the `ort` crate speaks its API version 31; `crates/runtime/ORT_VERSION` names the
/// tested release). Each run uses one thread, like [`TractBackend`](crate::TractBackend).
pub struct OrtBackend {
    env: Environment,
    library: PathBuf,
}

impl OrtBackend {
    /// Loads onnxruntime from `dylib_path`, or from the `ORT_DYLIB_PATH` environment variable
    /// when `None`. A process loads one library: later backends must name the same file.
    /// Failure to load is [`RuntimeError::Load`].
    pub fn new(dylib_path: Option<&Path>) -> Result<Self> {
        let library =
            match dylib_path {
                Some(p) => p.to_path_buf(),
                None => std::env::var_os("ORT_DYLIB_PATH").filter(|v| !v.is_empty()).map(PathBuf::from).ok_or_else(
                    || RuntimeError::Load("onnxruntime library not given: pass its path or set ORT_DYLIB_PATH".into()),
                )?,
            };
        let library = std::fs::canonicalize(&library)
            .map_err(|e| RuntimeError::Load(format!("onnxruntime library {}: {e}", library.display())))?;
        let mut loaded = ENVIRONMENT.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((env, path)) = loaded.as_ref() {
            if *path != library {
                return Err(RuntimeError::Load(format!(
                    "onnxruntime is already loaded from {} in this process; cannot load {} too",
                    path.display(),
                    library.display()
                )));
            }
            return Ok(Self { env: env.clone(), library });
        }
        let load = |e: String| RuntimeError::Load(format!("onnxruntime library {}: {e}", library.display()));
        let env = graph::guard(
            || {
                let builder = ort::init_from(&library).map_err(|e| load(e.to_string()))?;
                builder.with_name("verinet").with_telemetry(false).build().map_err(|e| load(e.to_string()))
            },
            RuntimeError::Load,
        )?;
        tracing::info!(library = %library.display(), "onnxruntime loaded");
        *loaded = Some((env.clone(), library.clone()));
        Ok(Self { env, library })
    }

    /// The library file in use.
    pub fn library(&self) -> &Path {
        &self.library
    }
}

impl Debug for OrtBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OrtBackend").field("library", &self.library).finish()
    }
}

impl InferenceBackend for OrtBackend {
    fn name(&self) -> &'static str {
        "onnxruntime"
    }

    fn prepare(&self, onnx: &[u8]) -> Result<Arc<dyn Plan>> {
        let plan = graph::guard(
            || {
                let (proto, rewritten) = graph::normalize(onnx)?;
                let onnx = rewritten.as_deref().unwrap_or(onnx);
                // What building the session added (folded constants included): onnxruntime
                // reports no plan size, and a graph that expands when compiled must show it.
                // One measured build at a time in this process, so that one reading never holds
                // another model's session.
                let _measuring = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
                let measured = || -> Result<(Session, usize)> {
                    let before = held_bytes();
                    let session = new_session(&self.env, onnx).map_err(RuntimeError::InvalidModel)?;
                    Ok((session, held_bytes().saturating_sub(before)))
                };
                let (mut session, mut grown) = measured()?;
                // Other threads' work can still grow the count meanwhile. A large reading is
                // taken again, up to twice, and the smallest kept, with its session alone (the
                // others are dropped, so the plan holds what its size says): a graph that really
                // expands shows it every time, a busy neighbour rarely three times running.
                let large = onnx.len().saturating_mul(4).saturating_add(32 << 20);
                for _ in 0..2 {
                    if grown <= large {
                        break;
                    }
                    let (again, reading) = measured()?;
                    if reading < grown {
                        (session, grown) = (again, reading);
                    }
                }
                let signature = graph::signature(&proto, &|i| inferred_output(&session, i))?;
                Ok(OrtPlan {
                    signature,
                    env: self.env.clone(),
                    onnx: onnx.into(),
                    sessions: AtomicUsize::new(1),
                    idle: Mutex::new(vec![session]),
                    session_bytes: grown.max(onnx.len()),
                })
            },
            RuntimeError::InvalidModel,
        )?;
        Ok(Arc::new(plan))
    }
}

/// Sessions of one model. onnxruntime's `run` needs exclusive access to a session, so
/// overlapping runs each take an idle session, and a new one is built when none is idle (at most
/// one per concurrent run).
struct OrtPlan {
    signature: IoSignature,
    env: Environment,
    onnx: Arc<[u8]>,
    idle: Mutex<Vec<Session>>,
    /// Sessions built so far, each holding its own copy of the weights.
    sessions: AtomicUsize,
    /// Bytes the first session added (at least the model's size, by [`held_bytes`]): the
    /// estimate per session. Process-wide, so concurrent work can inflate it.
    session_bytes: usize,
}

/// Held while a session is built and measured (see [`OrtBackend::prepare`]), and while a plan's
/// sessions are dropped.
static MEASURING: Mutex<()> = Mutex::new(());

/// The memory the process holds, by the most exact count there is: the bytes in use in glibc's
/// heap, where onnxruntime allocates, or else the resident set. The heap counts what is held,
/// not what the allocator keeps after a free; and where Rust allocates elsewhere (the node's
/// mimalloc), other threads' Rust work does not show in it.
fn held_bytes() -> usize {
    heap_bytes().unwrap_or_else(resident_bytes)
}

/// The process's resident set, from `VmRSS` in `/proc/self/status` (in kB, whatever the page
/// size; 0 where there is none).
fn resident_bytes() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kb = status.lines().find_map(|l| l.strip_prefix("VmRSS:")?.trim().strip_suffix("kB")?.trim().parse::<usize>().ok());
    kb.unwrap_or(0) * 1024
}

/// Bytes glibc's malloc has handed out and not had back, in its arenas and in blocks it mapped
/// on its own.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code, reason = "an FFI call into glibc that takes nothing and returns counters by value")]
fn heap_bytes() -> Option<usize> {
    // SAFETY: mallinfo2 takes no arguments and only reads the allocator's counters (glibc 2.33+).
    let info = unsafe { libc::mallinfo2() };
    Some(info.uordblks.saturating_add(info.hblkhd))
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_bytes() -> Option<usize> {
    None
}

impl OrtPlan {
    fn idle(&self) -> MutexGuard<'_, Vec<Session>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for OrtPlan {
    /// A session's memory going back to the heap while another model's build is measured would
    /// make that reading low (and a bomb look smaller than it is), so sessions are dropped only
    /// between measurements. A plan is often dropped on an async worker (evicted from the cache),
    /// which must not wait for a build that can take seconds: while one is measured, the
    /// sessions wait for it on a thread of their own.
    fn drop(&mut self) {
        let sessions = std::mem::take(self.idle.get_mut().unwrap_or_else(|e| e.into_inner()));
        if sessions.is_empty() {
            return;
        }
        match MEASURING.try_lock() {
            Ok(_measuring) => drop(sessions),
            Err(TryLockError::Poisoned(e)) => {
                let _measuring = e.into_inner();
                drop(sessions);
            }
            Err(TryLockError::WouldBlock) => {
                // (Where no thread can be made, the closure and its sessions drop here.)
                let _ = std::thread::Builder::new().name("ort-drop".into()).spawn(move || {
                    let _measuring = MEASURING.lock().unwrap_or_else(|e| e.into_inner());
                    drop(sessions);
                });
            }
        }
    }
}

impl Plan for OrtPlan {
    fn signature(&self) -> &IoSignature {
        &self.signature
    }

    fn run(&self, inputs: &TensorMap) -> Result<TensorMap> {
        let idle = self.idle().pop();
        let mut session = match idle {
            Some(s) => s,
            None => {
                let session = new_session(&self.env, &self.onnx).map_err(RuntimeError::Execution)?;
                self.sessions.fetch_add(1, Ordering::Relaxed);
                session
            }
        };
        let result = run_session(&mut session, &self.signature, inputs);
        self.idle().push(session);
        result
    }

    /// The bytes kept for building sessions, and what the first session made resident for every
    /// session; the cache re-weighs plans as they are used.
    fn memory_bytes(&self) -> usize {
        self.onnx.len() + self.session_bytes * self.sessions.load(Ordering::Relaxed)
    }
}

fn new_session(env: &Environment, onnx: &[u8]) -> Result<Session, String> {
    // One thread per run: the runtime's concurrency limit decides how many cores are busy.
    let builder = Session::builder(env)
        .map_err(|e| e.to_string())?
        .with_intra_threads(1)
        .map_err(|e| e.to_string())?
        .with_inter_threads(1)
        .map_err(|e| e.to_string())?;
    let mut builder = builder;
    builder.commit_from_memory(onnx).map_err(|e| e.to_string())
}

fn run_session(session: &mut Session, signature: &IoSignature, inputs: &TensorMap) -> Result<TensorMap> {
    let values = signature
        .inputs
        .iter()
        .map(|spec| {
            let t = inputs
                .get(&spec.name)
                .ok_or_else(|| RuntimeError::Execution(format!("input {:?} not given", spec.name)))?;
            Ok((spec.name.as_str(), to_ort(t)?))
        })
        .collect::<Result<Vec<_>>>()?;
    let mut outputs = session.run(values).map_err(|e| RuntimeError::Execution(e.to_string()))?;
    signature
        .outputs
        .iter()
        .map(|spec| {
            let value = outputs
                .remove(&spec.name)
                .ok_or_else(|| RuntimeError::Execution(format!("output {:?} not produced", spec.name)))?;
            Ok((spec.name.clone(), from_ort(&value, spec.dtype)?))
        })
        .collect()
}

fn to_ort(t: &Tensor) -> Result<DynValue> {
    fn make<T: PrimitiveTensorElementType + Debug + Clone + 'static>(
        shape: Vec<i64>,
        data: Vec<T>,
    ) -> Result<DynValue> {
        OrtTensor::from_array((shape, data))
            .map(OrtTensor::into_dyn)
            .map_err(|e| RuntimeError::Execution(format!("input tensor: {e}")))
    }
    let shape: Vec<i64> = t.shape().iter().map(|&d| d as i64).collect();
    let raw = t.raw();
    fn pod<T: bytemuck::Pod>(raw: &[u8]) -> Vec<T> {
        raw.chunks_exact(size_of::<T>()).map(bytemuck::pod_read_unaligned).collect()
    }
    match t.dtype() {
        DType::Float32 => make::<f32>(shape, pod(raw)),
        DType::Float64 => make::<f64>(shape, pod(raw)),
        DType::Float16 => make(shape, pod::<u16>(raw).into_iter().map(half::f16::from_bits).collect()),
        DType::Int8 => make::<i8>(shape, pod(raw)),
        DType::Int16 => make::<i16>(shape, pod(raw)),
        DType::Int32 => make::<i32>(shape, pod(raw)),
        DType::Int64 => make::<i64>(shape, pod(raw)),
        DType::Uint8 => make::<u8>(shape, raw.to_vec()),
        DType::Uint16 => make::<u16>(shape, pod(raw)),
        DType::Uint32 => make::<u32>(shape, pod(raw)),
        DType::Uint64 => make::<u64>(shape, pod(raw)),
        DType::Bool => make(shape, raw.iter().map(|&b| b != 0).collect()),
    }
}

fn from_ort(value: &DynValue, dtype: DType) -> Result<Tensor> {
    fn take<T: PrimitiveTensorElementType>(
        value: &DynValue,
        bytes: impl Fn(&[T]) -> Vec<u8>,
    ) -> Result<(Vec<usize>, Vec<u8>)> {
        let (shape, data) =
            value.try_extract_tensor::<T>().map_err(|e| RuntimeError::Execution(format!("output tensor: {e}")))?;
        let shape = shape
            .iter()
            .map(|&d| usize::try_from(d).map_err(|_| RuntimeError::Execution(format!("output dim {d}"))))
            .collect::<Result<_>>()?;
        Ok((shape, bytes(data)))
    }
    fn pod<T: bytemuck::Pod>(data: &[T]) -> Vec<u8> {
        bytemuck::cast_slice(data).to_vec()
    }
    let (shape, bytes) = match dtype {
        DType::Float32 => take::<f32>(value, pod)?,
        DType::Float64 => take::<f64>(value, pod)?,
        DType::Float16 => take::<half::f16>(value, |d| d.iter().flat_map(|v| v.to_le_bytes()).collect())?,
        DType::Int8 => take::<i8>(value, pod)?,
        DType::Int16 => take::<i16>(value, pod)?,
        DType::Int32 => take::<i32>(value, pod)?,
        DType::Int64 => take::<i64>(value, pod)?,
        DType::Uint8 => take::<u8>(value, pod)?,
        DType::Uint16 => take::<u16>(value, pod)?,
        DType::Uint32 => take::<u32>(value, pod)?,
        DType::Uint64 => take::<u64>(value, pod)?,
        DType::Bool => take::<bool>(value, |d| d.iter().map(|&b| u8::from(b)).collect())?,
    };
    Tensor::from_raw(dtype, shape, bytes).map_err(|e| RuntimeError::Execution(format!("output tensor: {e}")))
}

/// Output spec from the session, for graphs that leave an output's type out.
fn inferred_output(session: &Session, index: usize) -> Option<TensorSpec> {
    let outlet = session.outputs().get(index)?;
    let ValueType::Tensor { ty, shape, dimension_symbols } = outlet.dtype() else { return None };
    let dtype = dtype_from_ort(*ty)?;
    let shape = shape
        .iter()
        .enumerate()
        .map(|(axis, &d)| match u64::try_from(d) {
            Ok(n) => Dim::Fixed(n),
            Err(_) => match dimension_symbols.get(axis) {
                Some(s) if !s.is_empty() => Dim::Symbolic(s.clone()),
                _ => Dim::Symbolic(format!("{}_dim{axis}", outlet.name())),
            },
        })
        .collect();
    Some(TensorSpec { name: outlet.name().to_owned(), dtype, shape })
}

fn dtype_from_ort(ty: TensorElementType) -> Option<DType> {
    Some(match ty {
        TensorElementType::Float32 => DType::Float32,
        TensorElementType::Float64 => DType::Float64,
        TensorElementType::Float16 => DType::Float16,
        TensorElementType::Int8 => DType::Int8,
        TensorElementType::Int16 => DType::Int16,
        TensorElementType::Int32 => DType::Int32,
        TensorElementType::Int64 => DType::Int64,
        TensorElementType::Uint8 => DType::Uint8,
        TensorElementType::Uint16 => DType::Uint16,
        TensorElementType::Uint32 => DType::Uint32,
        TensorElementType::Uint64 => DType::Uint64,
        TensorElementType::Bool => DType::Bool,
        _ => return None,
    })
}
