//! How long a MiniLM answer's output tensor (float32 [2, 12, 384], 9,216 numbers) takes to write
//! as JSON, through axum's writer (a `BytesMut`) and into a presized `Vec` (BENCHMARKS.md,
//! issue 13). `cargo run --release -p verinet-primitives --example json_answer`

use std::time::Instant;

use bytes::BufMut;
use verinet_primitives::{DType, Tensor};

fn main() {
    let n = 2 * 12 * 384;
    let mut data = Vec::with_capacity(n * 4);
    let mut x = 0.123_456_7_f32;
    for i in 0..n {
        x = (x * 1.7 + i as f32 * 0.001).fract() - 0.5;
        data.extend_from_slice(&x.to_le_bytes());
    }
    let t = Tensor::from_raw(DType::Float32, vec![2, 12, 384], data).expect("tensor");
    const RUNS: u32 = 200;
    for _ in 0..3 {
        let started = Instant::now();
        let mut len = 0;
        for _ in 0..RUNS {
            let mut w = bytes::BytesMut::with_capacity(128).writer();
            serde_json::to_writer(&mut w, &t).expect("json");
            len = w.into_inner().len();
        }
        let bytes_mut = started.elapsed() / RUNS;
        let started = Instant::now();
        for _ in 0..RUNS {
            let mut v = Vec::with_capacity(n * 12);
            serde_json::to_writer(&mut v, &t).expect("json");
            len = v.len();
        }
        let presized = started.elapsed() / RUNS;
        println!("{len} bytes: BytesMut writer {bytes_mut:?}, presized Vec {presized:?}");
    }
}
