//! Measures the near-tie tolerance of `check_completion`: honest completions of SmolLM2-135M
//! (greedy and sampled, each generated alone and again in a batch of four) are checked with an
//! unbounded tolerance, so every token that is not the check's own choice is reported with the
//! smallest gap that accepts it. Also: how far forged tokens (the runner-up, a random token)
//! are from acceptable.
//!
//! `cargo run --release -p verinet-llm --example check_gaps [model.gguf] [chat prompts]`
//! (the model defaults to `$VERINET_TEST_MODELS/smollm2/model.gguf`).

#![allow(clippy::unwrap_used, reason = "a measurement script: any failure ends it")]

use std::path::PathBuf;
use std::sync::Arc;

use verinet_llm::{
    ChatMessage, CheckTolerance, Finish, GenEvent, GenRequest, Generated, Generator, LanguageModel, LlmConfig, Refutation, SamplingParams,
    check_completion, uniform,
};

const PROMPTS: &[&str] = &[
    "Tell me a joke.",
    "What is 2+2?",
    "Name three colours.",
    "Write a haiku about rust.",
    "What is the capital of France?",
    "Explain photosynthesis in one sentence.",
    "Give me a recipe for pancakes.",
    "Why is the sky blue?",
    "Translate 'good morning' into Spanish.",
    "List five animals that live in the ocean.",
    "What is a prime number?",
    "Write a short poem about the sea.",
    "How do I sort a list in Python?",
    "What does a CPU do?",
    "Describe a cat to someone who has never seen one.",
    "Count from one to ten.",
    "What is the boiling point of water?",
    "Suggest a name for a pet goldfish.",
    "Summarise the plot of Romeo and Juliet.",
    "What are the planets of the solar system?",
    "Write a limerick about a programmer.",
    "How many legs does a spider have?",
    "What is machine learning?",
    "Give three tips for better sleep.",
    "Who wrote Hamlet?",
    "What is the difference between weather and climate?",
    "Write a SQL query that counts rows in a table.",
    "Explain recursion to a child.",
    "What is the speed of light?",
    "Describe your ideal weekend.",
    "Write the opening line of a mystery novel.",
    "What is an API?",
    "How do bees make honey?",
    "Name a famous painter and one of their works.",
    "What is the largest mammal?",
    "Write a function in Rust that adds two numbers.",
    "Why do leaves change colour in autumn?",
    "Give me a motivational quote.",
    "What is the Pythagorean theorem?",
    "How does a rainbow form?",
    "Write a two-sentence horror story.",
    "What is inflation?",
    "Describe the taste of chocolate.",
    "What should I pack for a beach holiday?",
    "How do vaccines work?",
    "Write a thank-you note to a teacher.",
    "What is the tallest mountain on Earth?",
    "Explain what a black hole is.",
    "Give me a fun fact about octopuses.",
    "What is the meaning of the word 'ephemeral'?",
    "Write a tweet announcing a new coffee shop.",
    "How do I make a paper airplane?",
    "What is the difference between a virus and a bacterium?",
    "Describe a sunset in three sentences.",
    "What causes earthquakes?",
    "Write a riddle and its answer.",
    "What is democracy?",
    "How many days are in a leap year?",
    "Suggest a weekend project for a beginner programmer.",
    "Why do we dream?",
];

const RAW: &[&str] = &[
    "The quick brown fox",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
    "The three laws of thermodynamics are",
    "import numpy as np\n",
    "Dear Sir or Madam,",
    "In 1969, the first humans",
    "Ingredients:\n- 2 cups flour\n",
    "The mitochondria is",
    "<html>\n<head>\n",
    "Chapter 1\n\nIt was a dark and stormy night",
    "fn main() {\n",
    "Q: What is the capital of Italy?\nA:",
    "Breaking news:",
];

fn settings() -> Vec<SamplingParams> {
    vec![
        SamplingParams { temperature: 0.0, top_p: 1.0, seed: 0 },
        SamplingParams { temperature: 0.3, top_p: 0.95, seed: 0 },
        SamplingParams { temperature: 0.7, top_p: 0.9, seed: 0 },
        SamplingParams { temperature: 1.0, top_p: 1.0, seed: 0 },
        SamplingParams { temperature: 1.2, top_p: 0.8, seed: 0 },
    ]
}

async fn collect(mut rx: tokio::sync::mpsc::UnboundedReceiver<GenEvent>) -> Generated {
    while let Some(ev) = rx.recv().await {
        match ev {
            GenEvent::Done(d) => return d,
            GenEvent::Failed(e) => panic!("{e}"),
            GenEvent::Text(_) => {}
        }
    }
    panic!("no Done")
}

fn percentile(v: &mut [f32], q: f64) -> f32 {
    if v.is_empty() {
        return f32::NAN;
    }
    v.sort_by(f32::total_cmp);
    v[((v.len() - 1) as f64 * q).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args.get(1).filter(|a| !a.is_empty()).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var("VERINET_TEST_MODELS").unwrap_or_else(|_| "target/test-models".into())).join("smollm2/model.gguf")
    });
    let limit: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(usize::MAX);
    let model = Arc::new(LanguageModel::load(&std::fs::read(&path).expect("model file")).expect("model loads"));
    let solo = Generator::new(model.clone(), LlmConfig { max_batch: 1, ..LlmConfig::default() });
    let batched = Generator::new(model.clone(), LlmConfig { max_batch: 4, ..LlmConfig::default() });
    // `limit` chat prompts, then every raw one.
    let mut prompts: Vec<Vec<u32>> = PROMPTS
        .iter()
        .take(limit)
        .map(|p| model.codec().encode(&model.codec().render_chat(&[ChatMessage { role: "user".into(), content: (*p).into() }]).unwrap()).unwrap())
        .collect();
    prompts.extend(RAW.iter().map(|p| model.codec().encode(p).unwrap()));

    let mut reqs = Vec::new();
    for (pi, prompt) in prompts.iter().enumerate() {
        for (si, s) in settings().into_iter().enumerate() {
            let sampling = SamplingParams { seed: 1000 + (pi * 10 + si) as u64, ..s };
            reqs.push(GenRequest { prompt: prompt.clone(), max_tokens: 64, sampling, stop: vec![] });
        }
    }
    let unbounded = CheckTolerance { logit_gap: f32::INFINITY };
    let (mut completions, mut tokens, mut differ_solo_batch, mut refused_default) = (0usize, 0usize, 0usize, 0usize);
    let (mut greedy_gaps, mut sampled_gaps): (Vec<f32>, Vec<f32>) = (Vec::new(), Vec::new());
    let mut worst = (0f32, String::new());
    let mut by_setting: Vec<(f32, f32, usize, usize, f32)> = settings().iter().map(|s| (s.temperature, s.top_p, 0, 0, 0f32)).collect();
    let (mut runner_up, mut random_tok): (Vec<f32>, Vec<f32>) = (Vec::new(), Vec::new());
    let started = std::time::Instant::now();
    for group in reqs.chunks(4) {
        let mut outs = Vec::new();
        for r in group {
            outs.push((r, "solo", collect(solo.submit(r.clone()).unwrap()).await));
        }
        let rxs: Vec<_> = group.iter().map(|r| batched.submit(r.clone()).unwrap()).collect();
        let mut together = Vec::new();
        for rx in rxs {
            together.push(collect(rx).await);
        }
        for ((_, _, a), b) in outs.iter().zip(&together) {
            if a.output_ids != b.output_ids {
                differ_solo_batch += 1;
            }
        }
        outs.extend(group.iter().zip(together).map(|(r, g)| (r, "batch", g)));
        for (r, how, g) in &outs {
            let check = check_completion(&model, r, &g.output_ids, g.finish, &unbounded).unwrap();
            assert!(check.accepted(), "honest completion refuted with an unbounded tolerance: {:?}", check.refuted);
            completions += 1;
            tokens += check.checked;
            if let Some(b) = by_setting.iter_mut().find(|b| b.0 == r.sampling.temperature) {
                b.2 += check.checked;
                b.3 += check.near_ties.len();
                b.4 = check.near_ties.iter().map(|d| d.gap).fold(b.4, f32::max);
            }
            for d in &check.near_ties {
                let gaps = if r.sampling.temperature > 0.0 { &mut sampled_gaps } else { &mut greedy_gaps };
                gaps.push(d.gap);
                if d.gap > worst.0 {
                    worst = (
                        d.gap,
                        format!(
                            "{how} T={} top_p={} seed={} position {} claimed {} expected {}",
                            r.sampling.temperature, r.sampling.top_p, r.sampling.seed, d.position, d.claimed, d.expected
                        ),
                    );
                }
            }
            if check.near_ties.iter().any(|d| d.gap > CheckTolerance::default().logit_gap) {
                refused_default += 1;
            }
            // Forgeries at one position: the runner-up token and a random one.
            if *how == "solo" && g.output_ids.len() > 2 {
                let i = (uniform(r.sampling.seed, 7) * (g.output_ids.len() - 1) as f64) as usize;
                let logits = model.teacher_forced_logits(&r.prompt, &g.output_ids[..=i]).unwrap().get(i).unwrap().to_vec1::<f32>().unwrap();
                let mut order: Vec<u32> = (0..logits.len() as u32).collect();
                order.sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
                let second = if order[0] == g.output_ids[i] { order[1] } else { order[0] };
                let random = (uniform(r.sampling.seed, 8) * logits.len() as f64) as u32;
                for (forged, into) in [(second, &mut runner_up), (random, &mut random_tok)] {
                    if forged == g.output_ids[i] {
                        continue;
                    }
                    let mut out = g.output_ids[..=i].to_vec();
                    out[i] = forged;
                    let req = GenRequest { max_tokens: out.len(), ..(*r).clone() };
                    let c = check_completion(&model, &req, &out, Finish::Length, &unbounded).unwrap();
                    match c.near_ties.last().map(|d| (d.position, d.gap)) {
                        Some((p, gap)) if p == i => into.push(gap),
                        _ => match c.refuted {
                            Some(Refutation::Token(d)) if d.position == i => into.push(d.gap),
                            // The forged token happens to be the check's own choice.
                            _ => into.push(0.0),
                        },
                    }
                }
            }
        }
        eprintln!("{completions} completions, {tokens} tokens, {:.0} s; largest gap so far {:.4}", started.elapsed().as_secs_f64(), worst.0);
    }
    let mut all: Vec<f32> = greedy_gaps.iter().chain(&sampled_gaps).copied().collect();
    println!("completions {completions} ({} prompts x {} settings x solo/batch), tokens checked {tokens}", prompts.len(), settings().len());
    println!("solo and batched outputs differ: {differ_solo_batch} of {}", completions / 2);
    println!("tokens not the check's own choice: {} (greedy {}, sampled {})", all.len(), greedy_gaps.len(), sampled_gaps.len());
    println!(
        "gap: largest {:.4} (greedy {:.4}, sampled {:.4}), p99 {:.4}, p90 {:.4}, median {:.4}",
        percentile(&mut all, 1.0),
        percentile(&mut greedy_gaps, 1.0),
        percentile(&mut sampled_gaps, 1.0),
        percentile(&mut all, 0.99),
        percentile(&mut all, 0.9),
        percentile(&mut all, 0.5)
    );
    println!("worst: {:.4} at {}", worst.0, worst.1);
    for (t, top_p, n, ties, widest) in &by_setting {
        println!("  T={t} top_p={top_p}: {n} tokens, {ties} not the check's choice, largest gap {widest:.4}");
    }
    println!("refused at the default tolerance {}: {refused_default}", CheckTolerance::default().logit_gap);
    for (name, v) in [("runner-up", &mut runner_up), ("random token", &mut random_tok)] {
        let n = v.len();
        let within = |t: f32| v.iter().filter(|&&g| g <= t).count();
        let (half, one, more) = (within(0.5), within(1.0), within(1.5));
        println!(
            "forged {name}: {n}, gap median {:.3}, p10 {:.3}; accepted within 0.5: {half}, 1.0: {one}, 1.5: {more}",
            percentile(v, 0.5),
            percentile(v, 0.1)
        );
    }
}
