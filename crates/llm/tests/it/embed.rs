use verinet_llm::{Bundle, Embedder, bundle_from_zip};

use crate::{fixture, test_model};

#[test]
fn embeddings_match_sentence_transformers_within_1e4_cosine() {
    let bundle = bundle_from_zip(&test_model("minilm-l6/model.zip")).expect("bundle");
    let parsed = Bundle::parse(&bundle).unwrap();
    let reference = fixture("embeddings/minilm_reference.json");
    for (name, sha) in reference["model"]["sha256"].as_object().unwrap() {
        let entry = parsed.files.iter().find(|(e, _)| e.name == *name).expect(name);
        assert_eq!(entry.0.sha256, sha.as_str().unwrap(), "{name} in the bundle is the file the reference used");
    }
    let e = Embedder::load(&bundle).expect("loads");
    assert_eq!(e.info().dimensions, 384);
    assert_eq!(e.info().max_tokens, 256);
    let texts = reference["texts"].as_array().unwrap();
    let mut ids = Vec::new();
    for t in texts {
        let want: Vec<u32> = serde_json::from_value(t["token_ids"].clone()).unwrap();
        if t["truncated"].as_bool().unwrap() {
            // Refused, never silently cut: the reference cut it at 256.
            let err = e.tokenize(&[t["text"].as_str().unwrap().to_owned()]).unwrap_err();
            assert!(err.to_string().contains("has 432 tokens; this model takes at most 256"), "{err}");
        } else {
            assert_eq!(e.tokenize(&[t["text"].as_str().unwrap().to_owned()]).unwrap()[0], want, "{}", t["name"]);
        }
        ids.push(want);
    }
    // One padded batch of all of them, as a request with many inputs runs.
    let got = e.embed(&ids).unwrap();
    for (t, v) in texts.iter().zip(&got) {
        let want: Vec<f32> = serde_json::from_value(t["embedding"].clone()).unwrap();
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-5, "{} norm {norm}", t["name"]);
        let cos: f32 = v.iter().zip(&want).map(|(a, b)| a * b).sum::<f32>() / want.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!(cos > 1.0 - 1e-4, "{}: cosine {cos}", t["name"]);
    }
}

#[test]
fn broken_bundles_are_refused_with_a_reason() {
    let bundle = bundle_from_zip(&test_model("minilm-l6/model.zip")).unwrap();
    let err = Embedder::load(&bundle[..bundle.len() - 1000]).err().expect("truncated");
    assert!(err.to_string().contains("truncated"), "{err}");
    let no_tok = Bundle::build(&[("config.json", b"{}")]).unwrap();
    assert!(Embedder::load(&no_tok).err().unwrap().to_string().contains("config.json"));
}
