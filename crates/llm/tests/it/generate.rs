use std::sync::{Arc, OnceLock};

use verinet_llm::{ChatMessage, Finish, GenEvent, GenRequest, Generated, Generator, LanguageModel, LlmConfig, SamplingParams, argmax};

use crate::{fixture, test_model};

/// A greedy step where llama.cpp's top two logits are closer than this may go either way in
/// another correct implementation: llama.cpp itself moves logits by ~0.26 between batched and
/// token-by-token prompt evaluation, keeps its KV cache in f16 where this engine keeps f32,
/// and both round the activations of every `q4_1` product to 8 bits, each its own
/// activations (measured: a gap of 0.32 went the other way). Past such a step the two
/// continuations are different texts and are not compared.
const NEAR_TIE: f64 = 0.4;

/// Largest difference allowed between this engine's logits and llama.cpp's for the same
/// token at the same position. Measured over the fixture's 512 positions, on logits of 1-30:
/// mean 0.20, largest 1.27, 26 above 0.5 (with f32 activations instead of 8-bit ones: mean
/// 0.19, largest 1.01, 24 above 0.5). llama.cpp keeps its KV cache in f16 and runs other
/// kernels; its own batched and one-by-one evaluations differ by ~0.3. A wrong rotary table,
/// norm or weight moves logits by several units.
const LOGIT_TOL: f64 = 1.5;

/// Within this engine, a prompt run as one matrix and the same positions decoded one by one
/// give the same weight products bit for bit (`q4_1`), but attention and candle's `q8_0`
/// output layer run other kernels for one row and for many; their top two logits may swap
/// only when closer than this (measured: 0.12).
const SELF_TIE: f32 = 0.2;

/// SmolLM2-135M Q4_1, loaded once for all the tests.
pub fn model() -> Arc<LanguageModel> {
    static M: OnceLock<Arc<LanguageModel>> = OnceLock::new();
    M.get_or_init(|| Arc::new(LanguageModel::load(&test_model("smollm2/model.gguf")).expect("SmolLM2 loads"))).clone()
}

fn greedy() -> SamplingParams {
    SamplingParams { temperature: 0.0, top_p: 1.0, seed: 0 }
}

async fn run(g: &Generator, req: GenRequest) -> (String, Generated) {
    let mut rx = g.submit(req).expect("submitted");
    let mut streamed = String::new();
    let mut ids = Vec::new();
    while let Some(ev) = rx.recv().await {
        match ev {
            GenEvent::Text(p) => {
                streamed.push_str(&p.text);
                ids.extend(p.ids);
            }
            GenEvent::Done(d) => {
                // Every token is completed by exactly one piece, in order.
                assert_eq!(ids, d.output_ids, "the pieces' tokens are the output");
                return (streamed, d);
            }
            GenEvent::Failed(e) => panic!("generation failed: {e}"),
        }
    }
    panic!("no Done event")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn greedy_completions_match_llama_cpp_token_for_token() {
    let reference = fixture("llm/smollm2_llamacpp.json");
    let m = model();
    let g = Generator::new(m.clone(), LlmConfig::default());
    let mut compared = 0;
    let mut worst = 0f64;
    let mut full_matches = 0;
    for case in reference["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let prompt = if case["kind"] == "chat" {
            let messages: Vec<ChatMessage> = serde_json::from_value(case["messages"].clone()).unwrap();
            let rendered = m.codec().render_chat(&messages).unwrap();
            assert_eq!(rendered, case["prompt"].as_str().unwrap(), "{name}: the GGUF's template renders as jinja2 does");
            rendered
        } else {
            case["prompt"].as_str().unwrap().to_owned()
        };
        let ids = m.codec().encode(&prompt).unwrap();
        let want_prompt: Vec<u32> = serde_json::from_value(case["prompt_token_ids"].clone()).unwrap();
        assert_eq!(ids, want_prompt, "{name}: prompt tokens as llama.cpp's tokenizer makes them");

        let want: Vec<u32> = serde_json::from_value(case["output_token_ids"].clone()).unwrap();
        let (streamed, got) = run(&g, GenRequest { prompt: ids, max_tokens: want.len(), sampling: greedy(), stop: vec![] }).await;
        assert_eq!(streamed, got.text, "{name}: streamed pieces add up to the text");
        let steps = case["steps"].as_array().unwrap();
        let first_diff = got.output_ids.iter().zip(&want).position(|(a, b)| a != b);
        match first_diff {
            None => {
                assert_eq!(got.output_ids.len(), want.len(), "{name}");
                full_matches += 1;
            }
            Some(i) => {
                let gap = steps[i]["gap"].as_f64().unwrap();
                assert!(
                    gap < NEAR_TIE,
                    "{name}: token {i} is {} but llama.cpp chose {} with a clear margin {gap}",
                    got.output_ids[i],
                    want[i]
                );
                // Our pick must be llama.cpp's runner-up: the same two candidates, a near tie.
                assert_eq!(got.output_ids[i] as u64, steps[i]["top2_id"].as_u64().unwrap(), "{name}: step {i}");
                eprintln!("{name}: identical for {i} tokens, then a near tie (gap {gap}) went the other way");
            }
        }
        compared += 1;
        // After a near tie the continuation is another text, which may end sooner.
        if first_diff.is_none() {
            assert_eq!(got.finish, Finish::Length);
        }

        // Past the first near tie too: llama.cpp's own 32 tokens, teacher-forced through this
        // engine, get logits within LOGIT_TOL of llama.cpp's at every position, and the same
        // argmax wherever llama.cpp's margin is wider than the two tolerances.
        let tf = m.teacher_forced_logits(&want_prompt, &want).unwrap().to_vec2::<f32>().unwrap();
        for (step, row) in steps.iter().zip(&tf) {
            let i = step["step"].as_u64().unwrap();
            for (id, logit) in [("top1_id", "top1_logit"), ("top2_id", "top2_logit")] {
                let (id, want_logit) = (step[id].as_u64().unwrap() as usize, step[logit].as_f64().unwrap());
                let d = (f64::from(row[id]) - want_logit).abs();
                worst = worst.max(d);
                assert!(d < LOGIT_TOL, "{name} step {i}: logit of token {id} is {} here, {want_logit} in llama.cpp", row[id]);
            }
            // Two logits each within LOGIT_TOL can swap only when closer than twice that.
            if step["gap"].as_f64().unwrap() >= 2.0 * LOGIT_TOL {
                assert_eq!(u64::from(argmax(row)), step["top1_id"].as_u64().unwrap(), "{name} step {i}");
            }
        }
    }
    eprintln!("largest logit difference from llama.cpp: {worst:.4}; {full_matches} of {compared} cases identical for all 32 tokens");
    assert!(compared >= 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batching_seeds_and_teacher_forcing_agree_with_solo_generation() {
    let m = model();
    let g = Generator::new(m.clone(), LlmConfig { max_batch: 4, ..LlmConfig::default() });
    let prompts = ["Tell me a joke.", "What is 2+2?", "Name three colours.", "Write a haiku about rust."];
    let reqs: Vec<GenRequest> = prompts
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let text = m.codec().render_chat(&[ChatMessage { role: "user".into(), content: (*p).into() }]).unwrap();
            let sampling = if i % 2 == 0 { greedy() } else { SamplingParams { temperature: 0.8, top_p: 0.9, seed: 1234 + i as u64 } };
            GenRequest { prompt: m.codec().encode(&text).unwrap(), max_tokens: 24, sampling, stop: vec![] }
        })
        .collect();
    let mut solo = Vec::new();
    for r in &reqs {
        solo.push(run(&g, r.clone()).await.1.output_ids);
    }
    let together = futures_join(&g, &reqs).await;
    assert_eq!(solo, together, "a sequence's tokens do not depend on what else is in the batch");

    // The greedy ones: one teacher-forced pass gives, at every position, the token generated.
    for (r, out) in reqs.iter().zip(&solo).step_by(2) {
        let logits = m.teacher_forced_logits(&r.prompt, out).unwrap().to_vec2::<f32>().unwrap();
        let mut differ = 0;
        for (i, (row, &tok)) in logits.iter().zip(out).enumerate() {
            let best = argmax(row);
            if best != tok {
                let gap = row[best as usize] - row[tok as usize];
                assert!(gap < SELF_TIE, "position {i}: generated {tok}, teacher-forced argmax {best} by {gap}");
                differ += 1;
            }
        }
        assert!(differ <= 1, "{differ} near ties in {} tokens", out.len());
    }
}

async fn futures_join(g: &Generator, reqs: &[GenRequest]) -> Vec<Vec<u32>> {
    let rxs: Vec<_> = reqs.iter().map(|r| g.submit(r.clone()).expect("submitted")).collect();
    let mut outs = Vec::new();
    for mut rx in rxs {
        loop {
            match rx.recv().await.expect("event") {
                GenEvent::Done(d) => {
                    outs.push(d.output_ids);
                    break;
                }
                GenEvent::Failed(e) => panic!("{e}"),
                GenEvent::Text(_) => {}
            }
        }
    }
    outs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_strings_limits_and_cancellation() {
    let m = model();
    let g = Generator::new(m.clone(), LlmConfig { max_context: 64, ..LlmConfig::default() });
    let text = m.codec().render_chat(&[ChatMessage { role: "user".into(), content: "Count from one to ten.".into() }]).unwrap();
    let prompt = m.codec().encode(&text).unwrap();
    let (_, free) = run(&g, GenRequest { prompt: prompt.clone(), max_tokens: 20, sampling: greedy(), stop: vec![] }).await;
    let word = free.text.split_whitespace().nth(2).expect("a few words").to_owned();
    let (streamed, cut) = run(&g, GenRequest { prompt: prompt.clone(), max_tokens: 20, sampling: greedy(), stop: vec![word.clone()] }).await;
    assert_eq!(cut.finish, Finish::Stop);
    assert!(!cut.text.contains(&word) && free.text.starts_with(&cut.text), "{:?} cut at {word:?}: {:?}", free.text, cut.text);
    assert_eq!(streamed, cut.text, "nothing past the stop string was streamed");

    let err = g.submit(GenRequest { prompt: prompt.clone(), max_tokens: 64, sampling: greedy(), stop: vec![] }).unwrap_err();
    assert!(err.to_string().contains("context window is 64"), "{err}");
    assert!(g.submit(GenRequest { prompt: vec![], max_tokens: 4, sampling: greedy(), stop: vec![] }).is_err());

    // A dropped receiver ends the sequence; the generator stays usable.
    drop(g.submit(GenRequest { prompt: prompt.clone(), max_tokens: 20, sampling: greedy(), stop: vec![] }).unwrap());
    let (_, again) = run(&g, GenRequest { prompt, max_tokens: 20, sampling: greedy(), stop: vec![] }).await;
    assert_eq!(again.output_ids, free.output_ids);
}

