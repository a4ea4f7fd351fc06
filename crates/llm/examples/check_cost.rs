//! What checking a completion costs next to generating it: a 128-token completion of
//! SmolLM2-135M is generated (the `Generator`, alone in its batch) and then checked with
//! `check_completion` (one teacher-forced pass plus the sampler's rule per position), several
//! times each; medians and their ratio are printed, greedy and sampled.
//!
//! `cargo run --release -p verinet-llm --example check_cost [model.gguf] [repetitions]`
//! (the model defaults to `$VERINET_TEST_MODELS/smollm2/model.gguf`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use verinet_llm::{
    ChatMessage, CheckTolerance, Finish, GenEvent, GenRequest, Generated, Generator, LanguageModel, LlmConfig, SamplingParams, check_completion,
};

const TOKENS: usize = 128;

async fn generate(g: &Generator, req: &GenRequest) -> Generated {
    let mut rx = g.submit(req.clone()).expect("submitted");
    while let Some(ev) = rx.recv().await {
        match ev {
            GenEvent::Done(d) => return d,
            GenEvent::Failed(e) => panic!("{e}"),
            GenEvent::Text(_) => {}
        }
    }
    panic!("no Done event")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).filter(|a| !a.is_empty()).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("VERINET_TEST_MODELS").unwrap_or_else(|_| "target/test-models".into())).join("smollm2/model.gguf")
    });
    let reps: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(5);
    let model = Arc::new(LanguageModel::load(&std::fs::read(&path).expect("model file")).expect("model loads"));
    let g = Generator::new(model.clone(), LlmConfig { max_batch: 1, ..LlmConfig::default() });
    let text = "Write a long story about a dragon who learns to cook, with many details.";
    let rendered = model.codec().render_chat(&[ChatMessage { role: "user".into(), content: text.into() }]).expect("chat template");
    let prompt = model.codec().encode(&rendered).expect("tokenized");
    println!(
        "model {}, prompt {} tokens, completion {TOKENS} tokens, {reps} repetitions, {} rayon threads",
        path.display(),
        prompt.len(),
        rayon::current_num_threads()
    );
    for sampling in [SamplingParams { temperature: 0.0, top_p: 1.0, seed: 0 }, SamplingParams { temperature: 0.7, top_p: 0.9, seed: 7 }] {
        // A seed (or prompt) that runs the full length, so both sides handle 128 tokens.
        let mut req = GenRequest { prompt: prompt.clone(), max_tokens: TOKENS, sampling, stop: vec![] };
        let mut out = generate(&g, &req).await;
        while out.finish != Finish::Length {
            req.sampling.seed += 1;
            out = generate(&g, &req).await;
        }
        let (mut gen_ms, mut check_ms, mut tf_ms) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..reps {
            let t = Instant::now();
            let again = generate(&g, &req).await;
            gen_ms.push(t.elapsed().as_secs_f64() * 1e3);
            assert_eq!(again.output_ids, out.output_ids);
            let t = Instant::now();
            let check = check_completion(&model, &req, &out.output_ids, out.finish, &CheckTolerance::default()).expect("checked");
            check_ms.push(t.elapsed().as_secs_f64() * 1e3);
            assert!(check.accepted(), "{:?}", check.refuted);
            let t = Instant::now();
            model.teacher_forced_logits(&req.prompt, &out.output_ids).expect("forward");
            tf_ms.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let (generate_ms, check, tf) = (median(gen_ms), median(check_ms), median(tf_ms));
        let mode = if sampling.temperature > 0.0 { format!("sampled T={} top_p={}", sampling.temperature, sampling.top_p) } else { "greedy".into() };
        println!(
            "{mode}: generate {generate_ms:.0} ms ({:.1} tokens/s), check {check:.0} ms (of which the forward pass {tf:.0} ms): check/generate = {:.3}",
            TOKENS as f64 / generate_ms * 1e3,
            check / generate_ms
        );
    }
}
