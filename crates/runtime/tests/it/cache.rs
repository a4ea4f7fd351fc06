//! The plan cache: hits, evictions by memory, one compile for concurrent first calls.

use std::time::Duration;

use verinet_runtime::{CacheStats, RuntimeConfig, RuntimeError};

use crate::helpers::*;

#[tokio::test]
async fn the_second_run_is_a_hit() {
    let rt = tract_runtime(RuntimeConfig::default());
    let blobs = Blobs::new(digits_bytes());
    rt.run(blobs.id(), blobs.loader(), digits_input(1)).await.expect("first run");
    let second = rt.run(blobs.id(), blobs.loader(), digits_input(1)).await.expect("second run");
    assert_eq!(blobs.fetches(), 1);
    assert_eq!(second.timings.load, second.timings.load.min(Duration::from_millis(1)), "no compile on a hit");
    let stats = rt.cache_stats();
    assert_eq!((stats.entries, stats.hits, stats.misses, stats.evictions), (1, 1, 1, 0));
    assert!(stats.bytes >= digits_bytes().len(), "plan weighs at least its bytes: {stats:?}");
}

#[tokio::test]
async fn inspect_caches_the_plan_for_runs() {
    let rt = tract_runtime(RuntimeConfig::default());
    let blobs = Blobs::new(digits_bytes());
    rt.inspect(blobs.id(), digits_bytes()).await.expect("inspect");
    rt.run(blobs.id(), blobs.loader(), digits_input(1)).await.expect("run");
    assert_eq!(blobs.fetches(), 0, "the run used the inspected plan");
}

#[tokio::test]
async fn least_recently_used_plans_are_evicted_when_the_budget_is_small() {
    let digits = Blobs::new(digits_bytes());
    let dtypes = Blobs::new(data_model("dtypes.onnx"));
    let dtypes_input = || {
        let t = verinet_primitives::Tensor::from_f32(vec![1], &[1.0]).expect("tensor");
        let mut m = verinet_primitives::TensorMap::new();
        for dt in verinet_primitives::DType::ALL {
            let raw = vec![u8::from(dt == verinet_primitives::DType::Bool); dt.size()];
            m.insert(format!("x_{dt}"), verinet_primitives::Tensor::from_raw(dt, vec![1], raw).expect("tensor"));
        }
        m.insert("x_float32".into(), t);
        m
    };

    // Weigh both plans with room to spare.
    let roomy = tract_runtime(RuntimeConfig::default());
    roomy.run(digits.id(), digits.loader(), digits_input(1)).await.expect("digits");
    let a = roomy.cache_stats().bytes;
    roomy.run(dtypes.id(), dtypes.loader(), dtypes_input()).await.expect("dtypes");
    let b = roomy.cache_stats().bytes - a;

    // Now a budget that holds either plan but not both.
    let rt = tract_runtime(RuntimeConfig { cache_bytes: a + b - 1, ..RuntimeConfig::default() });
    rt.run(digits.id(), digits.loader(), digits_input(1)).await.expect("digits");
    rt.run(dtypes.id(), dtypes.loader(), dtypes_input()).await.expect("dtypes");
    assert_eq!(rt.cache_stats(), CacheStats { entries: 1, bytes: b, hits: 0, misses: 2, evictions: 1 });
    rt.run(digits.id(), digits.loader(), digits_input(1)).await.expect("digits again");
    assert_eq!(digits.fetches(), 3, "digits was evicted and fetched again");
    assert_eq!(rt.cache_stats().evictions, 2);
}

#[tokio::test]
async fn a_plan_larger_than_the_budget_runs_but_is_not_kept() {
    let rt = tract_runtime(RuntimeConfig { cache_bytes: 1, ..RuntimeConfig::default() });
    let blobs = Blobs::new(digits_bytes());
    for _ in 0..2 {
        rt.run(blobs.id(), blobs.loader(), digits_input(1)).await.expect("run");
    }
    assert_eq!(blobs.fetches(), 2);
    assert_eq!(rt.cache_stats().entries, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_calls_load_and_compile_once() {
    let rt = tract_runtime(RuntimeConfig::default());
    // Slow enough that every call arrives while the first load is still running.
    let blobs = Blobs::slow(digits_bytes(), Duration::from_millis(300));
    let calls: Vec<_> = (0..8)
        .map(|_| {
            let (rt, blobs) = (rt.clone(), blobs.clone());
            tokio::spawn(async move { rt.run(blobs.id(), blobs.loader(), digits_input(1)).await })
        })
        .collect();
    for call in calls {
        call.await.expect("task").expect("run");
    }
    assert_eq!(blobs.fetches(), 1);
    let stats = rt.cache_stats();
    assert_eq!((stats.entries, stats.misses, stats.hits), (1, 8, 0));
}

#[tokio::test]
async fn a_failed_load_is_reported_and_retried_by_the_next_call() {
    let rt = tract_runtime(RuntimeConfig::default());
    let blobs = Blobs::new(digits_bytes());
    let failing = || async { Err::<Vec<u8>, _>(RuntimeError::Load("blob store unreachable".into())) };
    let err = rt.run(blobs.id(), failing, digits_input(1)).await.expect_err("load fails");
    assert!(matches!(&err, RuntimeError::Load(m) if m.contains("unreachable")), "{err:?}");
    rt.run(blobs.id(), blobs.loader(), digits_input(1)).await.expect("second call loads again");
    assert_eq!(blobs.fetches(), 1);
}
