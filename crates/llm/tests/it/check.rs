//! `check_completion` on SmolLM2-135M: honest completions (greedy and sampled, each generated
//! alone and again in a batch of four) are accepted within the default tolerance; forged ones
//! (a token replaced, tokens after the end, a wrong finish, another seed's output, the output
//! of another quantization of the model) are refuted where they go wrong; llama.cpp's own greedy completions (an
//! independent honest source) are checked and reported.

use std::io::Cursor;
use std::sync::{Arc, OnceLock};

use candle_core::Device;
use candle_core::quantized::{GgmlDType, QTensor, gguf_file};
use verinet_llm::{
    ChatMessage, CheckTolerance, CompletionCheck, Finish, GenEvent, GenRequest, Generated, Generator, LanguageModel, LlmConfig, Refutation,
    SamplingParams, argmax, check_completion, uniform,
};

use crate::generate::model;
use crate::{fixture, test_model};

/// One honest completion, how it was produced, and its check at the default tolerance.
struct Honest {
    req: GenRequest,
    out: Generated,
    batched: bool,
    check: CompletionCheck,
}

/// Long and short answers, chat and raw text, one request with stop strings.
const CHAT: &[&str] = &[
    "Write a short story about a robot learning to paint.",
    "List ten fruits and their colours.",
    "Explain how a car engine works.",
    "Describe the water cycle step by step.",
    "Write a poem about autumn leaves.",
    "Give me five tips for learning a new language.",
    "What is 2+2?",
    "Say hello in French.",
];
const RAW: &[&str] = &["The quick brown fox", "def fibonacci(n):"];

fn greedy() -> SamplingParams {
    SamplingParams { temperature: 0.0, top_p: 1.0, seed: 0 }
}

fn chat_prompt(m: &LanguageModel, text: &str) -> Vec<u32> {
    let rendered = m.codec().render_chat(&[ChatMessage { role: "user".into(), content: text.into() }]).expect("chat template");
    m.codec().encode(&rendered).expect("tokenized")
}

/// Every prompt greedy and sampled (four settings in turn, a seed each), 24-64 tokens, plus a
/// greedy count cut by stop strings.
fn requests(m: &LanguageModel) -> Vec<GenRequest> {
    let warm = [(0.7, 0.9), (1.0, 1.0), (0.3, 0.95), (1.2, 0.8)];
    let prompts: Vec<Vec<u32>> = CHAT.iter().map(|t| chat_prompt(m, t)).chain(RAW.iter().map(|t| m.codec().encode(t).expect("tokenized"))).collect();
    let mut reqs = Vec::new();
    for (i, prompt) in prompts.into_iter().enumerate() {
        let max_tokens = 24 + (i * 7) % 13;
        let (temperature, top_p) = warm[i % warm.len()];
        let sampled = SamplingParams { temperature, top_p, seed: 4242 + i as u64 };
        reqs.push(GenRequest { prompt: prompt.clone(), max_tokens, sampling: greedy(), stop: vec![] });
        reqs.push(GenRequest { prompt, max_tokens, sampling: sampled, stop: vec![] });
    }
    let count = chat_prompt(m, "Count from one to ten, in words.");
    reqs.push(GenRequest { prompt: count, max_tokens: 40, sampling: greedy(), stop: vec!["five".into(), "5".into()] });
    reqs
}

/// Runs `reqs` through `generators` generators of `max_batch` each, taking turns (all queued
/// at once: with a batch of 4 they share it with each other as they come and go; with 1 each
/// runs alone in its batch, two at a time on two generators).
fn generate(m: &Arc<LanguageModel>, reqs: &[GenRequest], max_batch: usize, generators: usize) -> Vec<Generated> {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().expect("a runtime");
    rt.block_on(async {
        let gs: Vec<Generator> = (0..generators).map(|_| Generator::new(m.clone(), LlmConfig { max_batch, ..LlmConfig::default() })).collect();
        let rxs: Vec<_> = reqs.iter().enumerate().map(|(i, r)| gs[i % generators].submit(r.clone()).expect("submitted")).collect();
        let mut outs = Vec::new();
        for mut rx in rxs {
            loop {
                match rx.recv().await.expect("an event") {
                    GenEvent::Done(d) => break outs.push(d),
                    GenEvent::Failed(e) => panic!("generation failed: {e}"),
                    GenEvent::Text(_) => {}
                }
            }
        }
        outs
    })
}

/// The honest completions, generated and checked once: each request alone, then all in
/// batches of four (a batched twin identical to its solo run has the same check).
fn honest() -> &'static [Honest] {
    static H: OnceLock<Vec<Honest>> = OnceLock::new();
    H.get_or_init(|| {
        let m = model();
        let reqs = requests(&m);
        let solo = generate(&m, &reqs, 1, 2);
        let together = generate(&m, &reqs, 4, 1);
        let mut all: Vec<Honest> = Vec::new();
        for (batched, outs) in [(false, solo), (true, together)] {
            for (req, out) in reqs.iter().zip(outs) {
                let twin = all.iter().find(|h| h.req.sampling == req.sampling && h.req.prompt == req.prompt && h.out.output_ids == out.output_ids);
                let check = match twin {
                    Some(t) => t.check.clone(),
                    None => check(req, &out.output_ids, out.finish),
                };
                all.push(Honest { req: req.clone(), out, batched, check });
            }
        }
        all
    })
}

fn check(req: &GenRequest, output: &[u32], finish: Finish) -> CompletionCheck {
    check_completion(&model(), req, output, finish, &CheckTolerance::default()).expect("the check runs")
}

#[test]
fn honest_completions_alone_and_batched_are_accepted() {
    let tol = CheckTolerance::default().logit_gap;
    let (mut long, mut stopped, mut ties, mut widest, mut same_in_batch) = (0, 0, 0, 0f32, 0);
    let half = honest().len() / 2;
    for (i, h) in honest().iter().enumerate() {
        let (req, out, c) = (&h.req, h.out.output_ids.as_slice(), &h.check);
        long += usize::from(out.len() >= 24);
        stopped += usize::from(h.out.finish == Finish::Stop);
        if h.batched {
            same_in_batch += usize::from(honest()[i - half].out.output_ids == out);
        }
        assert!(c.accepted(), "honest completion refuted (T={}, batched {}): {:?}", req.sampling.temperature, h.batched, c.refuted);
        assert_eq!(c.checked, out.len());
        for d in &c.near_ties {
            assert!(d.gap <= tol && d.claimed != d.expected, "{d:?}");
            widest = widest.max(d.gap);
        }
        ties += c.near_ties.len();
    }
    let n = honest().len();
    eprintln!(
        "{n} honest completions ({long} of 24+ tokens, {stopped} ended by a stop; {same_in_batch} of {half} identical alone and batched), {ties} near ties, the widest {widest:.3}"
    );
    assert!(n >= 40 && long >= 30 && stopped >= 3, "{n} completions, {long} long, {stopped} stopped");
}

#[test]
fn a_replaced_token_is_refuted_at_its_position() {
    let m = model();
    let tol = CheckTolerance::default().logit_gap;
    let mut refuted = 0;
    for h in honest().iter().filter(|h| !h.batched && h.out.output_ids.len() >= 24).take(6) {
        let (req, honest_out, honest_check) = (&h.req, &h.out.output_ids, &h.check);
        // A position the check itself decides (no near tie), in the second half.
        let i = (honest_out.len() / 2..honest_out.len() - 1).find(|i| honest_check.near_ties.iter().all(|d| d.position != *i)).unwrap();
        // A random token; and for greedy the runner-up where the top two are clearly apart.
        let mut forgeries = vec![(i, (uniform(req.sampling.seed + 99, i as u32) * 49_000.0) as u32 + 100)];
        if req.sampling.temperature == 0.0 {
            let logits = m.teacher_forced_logits(&req.prompt, honest_out).unwrap().to_vec2::<f32>().unwrap();
            let wide = (0..honest_out.len() - 1).find(|&k| runner_up(&logits[k]).1 > 4.0 * tol);
            forgeries.extend(wide.map(|k| (k, runner_up(&logits[k]).0)));
        }
        for (k, forged) in forgeries {
            if forged == honest_out[k] {
                continue;
            }
            let mut out = honest_out.clone();
            out[k] = forged;
            let c = check(req, &out, h.out.finish);
            match c.refuted {
                Some(Refutation::Token(d)) => {
                    assert_eq!((d.position, d.claimed, d.expected), (k, forged, honest_out[k]), "{:?}", req.sampling);
                    assert!(d.gap > tol);
                    assert_eq!(c.checked, k + 1);
                }
                other => panic!("token {k} replaced by {forged}: {other:?}"),
            }
            refuted += 1;
        }
    }
    assert!(refuted >= 8, "{refuted}");
}

/// The second most likely token and how far below the first it is.
fn runner_up(row: &[f32]) -> (u32, f32) {
    let best = argmax(row) as usize;
    let (id, l) = row.iter().enumerate().filter(|(i, _)| *i != best).fold((0, f32::NEG_INFINITY), |a, (i, &l)| if l > a.1 { (i, l) } else { a });
    (id as u32, row[best] - l)
}

#[test]
fn tokens_after_the_end_and_wrong_finishes_are_refuted() {
    let m = model();
    let solo = || honest().iter().filter(|h| !h.batched);
    // A worker padding after a real end-of-turn token to charge more.
    let mut padded = 0;
    for h in solo().filter(|h| h.out.finish == Finish::Stop && m.codec().is_stop(*h.out.output_ids.last().unwrap())) {
        let end = h.out.output_ids.len() - 1;
        let mut out = h.out.output_ids.clone();
        out.extend_from_slice(&h.out.output_ids[..5.min(end)]);
        let req = GenRequest { max_tokens: h.req.max_tokens.max(out.len()), ..h.req.clone() };
        for finish in [Finish::Stop, Finish::Length] {
            let c = check(&req, &out, finish);
            assert_eq!(c.refuted, Some(Refutation::AfterEnd { position: end + 1, claimed: out[end + 1], ended: Finish::Stop }));
            assert_eq!(c.checked, end + 1, "the end-of-turn token itself was checked");
        }
        padded += 1;
    }
    assert!(padded >= 2, "{padded} completions ended with an end-of-turn token");

    // The stop-string request: honest, it ends on the token completing "five" or "5".
    let counted = solo().find(|h| !h.req.stop.is_empty()).unwrap();
    assert_eq!(counted.out.finish, Finish::Stop, "{:?}", counted.out.text);
    let mut more = counted.out.output_ids.clone();
    more.push(more[0]);
    let c = check(&counted.req, &more, Finish::Stop);
    assert!(matches!(c.refuted, Some(Refutation::AfterEnd { ended: Finish::Stop, .. })), "{:?}", c.refuted);

    // Cut short and called "length"; a full-length completion called "stop".
    let long = solo().find(|h| h.out.finish == Finish::Length && h.out.output_ids.len() > 30).unwrap();
    let cut = &long.out.output_ids[..20];
    assert_eq!(check(&long.req, cut, Finish::Length).refuted, Some(Refutation::Finish { position: 20, claimed: Finish::Length, actual: None }));
    let last = long.out.output_ids.len() - 1;
    assert_eq!(
        check(&long.req, &long.out.output_ids, Finish::Stop).refuted,
        Some(Refutation::Finish { position: last, claimed: Finish::Stop, actual: Some(Finish::Length) })
    );
    assert!(check(&long.req, &[], Finish::Stop).refuted.is_some(), "an empty output is never generated");
    let unknown = [long.out.output_ids[0], 60_000];
    let c = check(&long.req, &unknown, Finish::Length);
    assert!(matches!(c.refuted, Some(Refutation::Token(d)) if d.position == 1 && d.gap.is_infinite()), "{:?}", c.refuted);
}

#[test]
fn an_output_claimed_under_another_seed_is_refuted() {
    let m = model();
    let sampled: Vec<&Honest> = honest().iter().filter(|h| !h.batched && h.req.sampling.temperature >= 0.7).take(5).collect();
    // The same requests under other seeds, generated honestly: where they first differ from
    // the claimed output, the check has its first chance to notice.
    let reseeded: Vec<GenRequest> = sampled
        .iter()
        .map(|h| GenRequest { sampling: SamplingParams { seed: h.req.sampling.seed ^ 0x5eed, ..h.req.sampling }, ..h.req.clone() })
        .collect();
    let truth = generate(&m, &reseeded, 4, 1);
    let (mut at_divergence, mut later) = (0, 0);
    for ((h, req), t) in sampled.iter().zip(&reseeded).zip(&truth) {
        let claimed = &h.out.output_ids;
        let diverge = claimed.iter().zip(&t.output_ids).position(|(a, b)| a != b).unwrap_or(claimed.len().min(t.output_ids.len()));
        let c = check(req, claimed, h.out.finish);
        let at = c.refuted.expect("another seed's output is refuted").position();
        assert!(at >= diverge, "refuted at {at}, before the outputs diverge at {diverge}");
        if at == diverge {
            at_divergence += 1;
        } else {
            later += 1;
        }
    }
    eprintln!("another seed: {} outputs refuted, {at_divergence} where they diverge, {later} later", sampled.len());
    assert!(sampled.len() >= 4);
}

/// SmolLM2 with its 4-bit block weights requantized to `to` (dequantized, then quantized again
/// by candle as llama.cpp's quantizer would): another quantization of the same model, as a
/// worker cutting costs might serve it.
fn requantized(to: GgmlDType) -> LanguageModel {
    let bytes = test_model("smollm2/model.gguf");
    let mut r = Cursor::new(&bytes);
    let ct = gguf_file::Content::read(&mut r).expect("GGUF");
    let mut tensors = Vec::new();
    for name in ct.tensor_infos.keys() {
        let t = ct.tensor(&mut r, name, &Device::Cpu).expect("a tensor");
        let t = if name.starts_with("blk.") && t.dtype() == GgmlDType::Q4_1 {
            QTensor::quantize(&t.dequantize(&Device::Cpu).expect("dequantized"), to).expect("requantized")
        } else {
            t
        };
        tensors.push((name.as_str(), t));
    }
    let metadata: Vec<_> = ct.metadata.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let tensors: Vec<_> = tensors.iter().map(|(n, t)| (*n, t)).collect();
    let mut out = Cursor::new(Vec::new());
    gguf_file::write(&mut out, &metadata, &tensors).expect("GGUF written");
    LanguageModel::load(&out.into_inner()).expect("the requantized model loads")
}

#[test]
fn an_output_of_another_quantization_is_refuted() {
    let m = model();
    let other = Arc::new(requantized(GgmlDType::Q4_0));
    let honest: Vec<&Honest> = honest().iter().filter(|h| !h.batched && h.req.stop.is_empty()).take(8).collect();
    let reqs: Vec<GenRequest> = honest.iter().map(|h| h.req.clone()).collect();
    let forged = generate(&other, &reqs, 4, 1);
    let mut refuted = 0;
    for ((h, req), f) in honest.iter().zip(&reqs).zip(&forged) {
        let diverge = h.out.output_ids.iter().zip(&f.output_ids).position(|(a, b)| a != b);
        let c = check_completion(&m, req, &f.output_ids, f.finish, &CheckTolerance::default()).unwrap();
        eprintln!("q4_0 (T={}): diverges at {diverge:?}, refuted at {:?}", req.sampling.temperature, c.refuted.map(|r| r.position()));
        if let Some(r) = c.refuted {
            assert!(diverge.is_some_and(|d| r.position() >= d), "refuted at {} before the outputs diverge ({diverge:?})", r.position());
            refuted += 1;
        }
    }
    eprintln!("another quantization (q4_0): {refuted} of {} outputs refuted", reqs.len());
    assert!(refuted * 4 >= reqs.len() * 3, "{refuted} of {} refuted", reqs.len());
}

#[test]
fn llama_cpp_greedy_completions_are_checked_and_reported() {
    let m = model();
    let reference = fixture("llm/smollm2_llamacpp.json");
    let (mut accepted, mut ties) = (0, 0);
    let cases = reference["cases"].as_array().unwrap();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let prompt: Vec<u32> = serde_json::from_value(case["prompt_token_ids"].clone()).unwrap();
        let output: Vec<u32> = serde_json::from_value(case["output_token_ids"].clone()).unwrap();
        let finish = if case["stop_reason"] == "length" { Finish::Length } else { Finish::Stop };
        let req = GenRequest { prompt, max_tokens: output.len(), sampling: greedy(), stop: vec![] };
        let c = check_completion(&m, &req, &output, finish, &CheckTolerance::default()).unwrap();
        ties += c.near_ties.len();
        match c.refuted {
            None => accepted += 1,
            Some(r) => {
                // llama.cpp's own margin at the refuted step, for the report.
                let step = &case["steps"][r.position()];
                eprintln!("llama.cpp {name}: refuted at {} ({r:?}); llama.cpp's own top-two gap there {}", r.position(), step["gap"]);
            }
        }
    }
    eprintln!("llama.cpp: {accepted} of {} greedy completions accepted, {ties} near ties accepted", cases.len());
    assert_eq!(cases.len(), 8);
}
