//! Input checks, timeout, queue bound and concurrency cap.

use std::time::{Duration, Instant};

use verinet_primitives::{InputMismatch, Tensor, TensorMap};
use verinet_runtime::{Runtime, RuntimeConfig, RuntimeError};

use crate::helpers::*;

/// Rows of digits input that keep one core busy for a while (tens of milliseconds or more),
/// within the default element limit.
const HEAVY_BATCH: usize = 200_000;

async fn run_digits(rt: &Runtime, input: TensorMap) -> Result<verinet_runtime::RunOutput, RuntimeError> {
    let bytes = digits_bytes();
    rt.run(id(&bytes), loader(&bytes), input).await
}

/// Waits (bounded) until `cond` holds.
async fn until(what: &str, cond: impl Fn() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test]
async fn mismatched_inputs_are_input_errors() {
    let rt = tract_runtime(RuntimeConfig { max_input_elements: 1000, ..RuntimeConfig::default() });
    let pixels = |t: Tensor| TensorMap::from([("pixels".to_string(), t)]);
    type Expected = fn(&InputMismatch) -> bool;
    let cases: Vec<(TensorMap, Expected)> = vec![
        (TensorMap::new(), |m| matches!(m, InputMismatch::Missing { .. })),
        (pixels(Tensor::from_i64(vec![1, 64], &[0; 64]).expect("t")), |m| matches!(m, InputMismatch::DType { .. })),
        (pixels(Tensor::from_f32(vec![1, 63], &[0.0; 63]).expect("t")), |m| {
            matches!(m, InputMismatch::Dim { axis: 1, .. })
        }),
        (pixels(Tensor::from_f32(vec![64], &[0.0; 64]).expect("t")), |m| matches!(m, InputMismatch::Rank { .. })),
        (
            {
                let mut m = digits_input(1);
                m.insert("extra".into(), Tensor::from_f32(vec![1], &[0.0]).expect("t"));
                m
            },
            |m| matches!(m, InputMismatch::Unknown { .. }),
        ),
        (digits_input(16), |m| matches!(m, InputMismatch::TooLarge { got: 1024, limit: 1000 })),
    ];
    for (inputs, expected) in cases {
        match run_digits(&rt, inputs).await {
            Err(RuntimeError::Input(m)) => assert!(expected(&m), "unexpected mismatch {m:?}"),
            other => panic!("expected an input error, got {other:?}"),
        }
    }
    assert_eq!(rt.running(), 0);
}

#[tokio::test]
async fn a_one_nanosecond_timeout_times_out() {
    let rt = tract_runtime(RuntimeConfig { timeout: Duration::from_nanos(1), ..RuntimeConfig::default() });
    match run_digits(&rt, digits_input(1)).await {
        Err(RuntimeError::Timeout(d)) => assert_eq!(d, Duration::from_nanos(1)),
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert_eq!(rt.cache_stats().entries, 1, "compiling is not under the timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_out_run_keeps_its_slot_until_it_finishes() {
    let rt = tract_runtime(RuntimeConfig {
        max_concurrency: 1,
        timeout: Duration::from_millis(1),
        ..RuntimeConfig::default()
    });
    let started = Instant::now();
    match run_digits(&rt, digits_input(HEAVY_BATCH)).await {
        Err(RuntimeError::Timeout(_)) => {}
        other => panic!("expected a timeout, got {other:?}"),
    }
    // The caller has its answer, the computation goes on and still counts against the limit.
    assert_eq!(rt.running(), 1);
    until("the abandoned run ends", || rt.running() == 0).await;
    assert!(started.elapsed() > Duration::from_millis(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_queue_a_busy_runtime_turns_requests_away() {
    let rt = tract_runtime(RuntimeConfig { max_concurrency: 1, max_queue: 0, ..RuntimeConfig::default() });
    run_digits(&rt, digits_input(1)).await.expect("warm the cache");
    let heavy = {
        let rt = rt.clone();
        tokio::spawn(async move { run_digits(&rt, digits_input(HEAVY_BATCH)).await })
    };
    until("the heavy run holds the slot", || rt.running() == 1).await;
    let (a, b, c) = tokio::join!(
        run_digits(&rt, digits_input(1)),
        run_digits(&rt, digits_input(1)),
        run_digits(&rt, digits_input(1))
    );
    for r in [a, b, c] {
        assert!(matches!(r, Err(RuntimeError::Overloaded { queued: 0 })), "{r:?}");
    }
    let out = heavy.await.expect("task").expect("the heavy run completes");
    assert_eq!(out.outputs["label"].shape(), [HEAVY_BATCH]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_holds_max_queue_waiters() {
    let rt = tract_runtime(RuntimeConfig { max_concurrency: 1, max_queue: 1, ..RuntimeConfig::default() });
    run_digits(&rt, digits_input(1)).await.expect("warm the cache");
    let spawn = |batch| {
        let rt = rt.clone();
        tokio::spawn(async move { run_digits(&rt, digits_input(batch)).await })
    };
    let heavy = spawn(HEAVY_BATCH);
    until("the heavy run holds the slot", || rt.running() == 1).await;
    let waiter = spawn(1);
    until("one request waits", || rt.queued() == 1).await;
    match run_digits(&rt, digits_input(1)).await {
        Err(RuntimeError::Overloaded { queued: 1 }) => {}
        other => panic!("expected Overloaded, got {other:?}"),
    }
    heavy.await.expect("task").expect("heavy run");
    let out = waiter.await.expect("task").expect("the waiter runs once the slot frees");
    assert!(out.timings.queue > Duration::ZERO);
    assert_eq!((rt.queued(), rt.running()), (0, 0));
}

#[test]
fn run_futures_are_send() {
    fn send<T: Send>(_: T) {}
    let rt = tract_runtime(RuntimeConfig::default());
    let bytes = digits_bytes();
    send(rt.run(id(&bytes), loader(&bytes), TensorMap::new()));
    send(rt.inspect(id(&bytes), bytes.clone()));
}

#[test]
fn defaults_are_documented_values() {
    let c = RuntimeConfig::default();
    assert!(c.max_concurrency >= 1);
    assert_eq!(c.max_queue, 256);
    assert_eq!(c.timeout, Duration::from_secs(30));
    assert_eq!(c.cache_bytes, 2 << 30);
    assert_eq!(c.max_input_elements, 16 << 20);
    let rt = tract_runtime(RuntimeConfig { max_concurrency: 0, ..c });
    assert_eq!(rt.config().max_concurrency, 1, "zero slots would never run anything");
}

/// A model of a few hundred bytes whose ConstantOfShape expands to 256 MiB when compiled
/// (`fixtures/bombs/make_bombs.py`) is refused, and nothing of it is kept.
#[tokio::test]
async fn a_graph_that_expands_when_compiled_is_refused() {
    let bytes = std::fs::read(repo_root().join("fixtures/bombs/constant_of_shape.onnx")).expect("the bomb fixture");
    assert!(bytes.len() < 512, "a tiny model: {} bytes", bytes.len());
    let rt = tract_runtime(RuntimeConfig::default());
    match rt.inspect(id(&bytes), bytes.clone()).await {
        Err(RuntimeError::InvalidModel(m)) => assert!(m.contains("256 MiB") && m.contains("this node allows 64 MiB"), "{m}"),
        other => panic!("a 256 MiB expansion must be refused, got {:?}", other.map(|_| ())),
    }
    assert_eq!(rt.cache_stats().entries, 0, "the plan is not kept");
    // A node that allows it (a bigger slack) compiles it.
    let rt = tract_runtime(RuntimeConfig { plan_slack_bytes: 512 << 20, ..RuntimeConfig::default() });
    rt.inspect(id(&bytes), bytes).await.expect("allowed with more slack");
}

/// Tract, with every run noting the thread it ran on.
struct ThreadsBackend(verinet_runtime::TractBackend, std::sync::Arc<std::sync::Mutex<Vec<std::thread::ThreadId>>>);
struct ThreadsPlan(std::sync::Arc<dyn verinet_runtime::Plan>, std::sync::Arc<std::sync::Mutex<Vec<std::thread::ThreadId>>>);

impl verinet_runtime::InferenceBackend for ThreadsBackend {
    fn name(&self) -> &'static str {
        "threads"
    }
    fn prepare(&self, onnx: &[u8]) -> verinet_runtime::Result<std::sync::Arc<dyn verinet_runtime::Plan>> {
        Ok(std::sync::Arc::new(ThreadsPlan(self.0.prepare(onnx)?, self.1.clone())))
    }
}

impl verinet_runtime::Plan for ThreadsPlan {
    fn signature(&self) -> &verinet_primitives::IoSignature {
        self.0.signature()
    }
    fn run(&self, inputs: &TensorMap) -> verinet_runtime::Result<TensorMap> {
        self.1.lock().expect("threads").push(std::thread::current().id());
        self.0.run(inputs)
    }
    fn memory_bytes(&self) -> usize {
        self.0.memory_bytes()
    }
}

/// A model known to be quick runs on the caller's thread once a run has been timed; the
/// first run, one predicted slow (a big batch), and every run with `inline_below` zero go to
/// the blocking pool.
#[tokio::test]
async fn quick_runs_stay_on_the_calling_thread() {
    for (inline_below, want_inline) in [(Duration::from_millis(50), true), (Duration::ZERO, false)] {
        let threads = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let backend = std::sync::Arc::new(ThreadsBackend(verinet_runtime::TractBackend::new(), threads.clone()));
        let rt = Runtime::new(backend, RuntimeConfig { inline_below, ..RuntimeConfig::default() });
        for _ in 0..3 {
            run_digits(&rt, digits_input(1)).await.expect("run");
        }
        run_digits(&rt, digits_input(HEAVY_BATCH / 10)).await.expect("big run");
        let here = std::thread::current().id();
        let on_caller: Vec<bool> = threads.lock().expect("threads").iter().map(|t| *t == here).collect();
        assert_eq!(on_caller, [false, want_inline, want_inline, false], "inline_below {inline_below:?}");
    }
}
