//! `verinet receipt verify FILE`: an offline check of what a node signed, with no node.
//!
//! FILE is a receipt, a saved `infer --json` response, a saved chat or text completion (JSON),
//! a saved stream of one (its server-sent events, `data: {...}` lines), or a saved embeddings
//! answer. Every check is recomputed here from the file alone. What needs the model or the node
//! is listed as not checked, so a pass never claims more than the file shows.

use std::collections::BTreeSet;

use alloy_primitives::B256;
use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::Value;
use verinet_primitives::{
    Address, Tensor, TensorMap,
    openai::{CompletionProof, EmbeddingProof, Usage},
    tensors_hash, token_ids_hash,
    wire::SignedReceipt,
};

use crate::cli::ReceiptVerifyArgs;

/// Reads FILE, tells what it is, checks it, prints the verdict; an error when a check fails.
pub fn verify(a: ReceiptVerifyArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    let node = match &a.node {
        Some(n) => Some(n.parse::<Address>().with_context(|| format!("{n:?} is not an address"))?),
        None => None,
    };
    let verdict = match Saved::read(&text)? {
        Saved::Receipt { signed, what, outputs, inputs } => receipt_verdict(&signed, what, node, outputs, inputs),
        Saved::Completion(answer) => completion_verdict(&answer, node, a.prices.as_ref())?,
        Saved::Embeddings(doc) => embeddings_verdict(&doc, node, a.prices.as_ref())?,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&verdict)?);
    } else {
        verdict.print();
    }
    let failed: Vec<&str> = verdict.checks.iter().filter(|c| !c.ok).map(|c| c.name).collect();
    if !failed.is_empty() {
        let why = format!("INVALID: {} of {} checks failed: {}", failed.len(), verdict.checks.len(), failed.join(", "));
        return Err(crate::Shown(why).into());
    }
    Ok(())
}

/// Prices to recompute a language call's charge with (`--prices`), base units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prices {
    /// The creator's royalty per 1,000 prompt (input) tokens.
    pub prompt_per_1k: u128,
    /// The creator's royalty per 1,000 completion tokens.
    pub completion_per_1k: u128,
    /// The node's compute fee per 1,000 tokens.
    pub operator_fee_per_1k: u128,
    /// The protocol fee, basis points of the rest.
    pub protocol_bps: u128,
}

impl Prices {
    /// The charge for these counts as docs/payments.md states it (mode `none`, no app): each
    /// per-1,000 part rounded up once, the protocol fee rounded down.
    fn charge(&self, prompt: u128, completion: u128) -> Charge {
        let per_1k = |x: u128| x.div_ceil(1000);
        let royalty =
            per_1k(prompt.saturating_mul(self.prompt_per_1k).saturating_add(completion.saturating_mul(self.completion_per_1k)));
        let compute = per_1k(prompt.saturating_add(completion).saturating_mul(self.operator_fee_per_1k));
        let base = royalty.saturating_add(compute);
        let protocol = base.saturating_mul(self.protocol_bps) / 10_000;
        Charge { royalty, compute, protocol, total: base.saturating_add(protocol) }
    }
}

struct Charge {
    royalty: u128,
    compute: u128,
    protocol: u128,
    total: u128,
}

/// `--prices prompt_per_1k,completion_per_1k,operator_fee_per_1k,protocol_bps`.
pub fn parse_prices(s: &str) -> Result<Prices, String> {
    let parts: Vec<&str> = s.split(',').map(str::trim).collect();
    let [p, c, o, bps] = parts.as_slice() else {
        return Err(format!("{s:?}: give four numbers, prompt_per_1k,completion_per_1k,operator_fee_per_1k,protocol_bps"));
    };
    let num = |what: &str, v: &str| v.parse::<u128>().map_err(|_| format!("{what} {v:?} is not a decimal amount in base units"));
    let prices = Prices {
        prompt_per_1k: num("prompt_per_1k", p)?,
        completion_per_1k: num("completion_per_1k", c)?,
        operator_fee_per_1k: num("operator_fee_per_1k", o)?,
        protocol_bps: num("protocol_bps", bps)?,
    };
    if prices.protocol_bps > 10_000 {
        return Err(format!("protocol_bps {} is over 10000 (100%)", prices.protocol_bps));
    }
    Ok(prices)
}

/// The outcome: each check with what it compared, and what the file cannot show.
#[derive(Debug, Serialize)]
struct Verdict {
    ok: bool,
    /// What FILE was: `receipt`, `infer response`, `chat completion`, `text completion stream`,
    /// `embeddings`, ...
    kind: String,
    /// Who signed, when the signature holds.
    signer: Option<Address>,
    request_id: String,
    checks: Vec<Check>,
    not_checked: Vec<String>,
    #[serde(skip)]
    receipt: SignedReceipt,
}

#[derive(Debug, Serialize)]
struct Check {
    name: &'static str,
    ok: bool,
    detail: String,
}

impl Verdict {
    fn new(kind: impl Into<String>, receipt: &SignedReceipt) -> Self {
        Self {
            ok: true,
            kind: kind.into(),
            signer: None,
            request_id: receipt.receipt.request_id.clone(),
            checks: Vec::new(),
            not_checked: Vec::new(),
            receipt: receipt.clone(),
        }
    }

    fn check(&mut self, name: &'static str, ok: bool, detail: impl Into<String>) {
        self.ok &= ok;
        self.checks.push(Check { name, ok, detail: detail.into() });
    }

    fn not_checked(&mut self, what: impl Into<String>) {
        self.not_checked.push(what.into());
    }

    /// The signature (the digest is the EIP-712 hash, it recovers the node named), and the
    /// signer the user asked for (`--node`).
    fn signature(&mut self, signed: &SignedReceipt, node: Option<Address>) {
        let claimed = signed.receipt.node;
        match verinet_verify::verify_receipt(signed) {
            Ok(signer) => {
                self.signer = Some(signer);
                self.check("signature", true, format!("signed by {signer} (chain {}, digest {:#x})", signed.chain_id, signed.digest));
            }
            Err(e) => self.check("signature", false, format!("{e}; the receipt names node {claimed}")),
        }
        if let Some(want) = node {
            let got = self.signer.unwrap_or(claimed);
            self.check("node", got == want, format!("signer {got}, asked for {want}"));
        }
    }

    fn print(&self) {
        let r = &self.receipt.receipt;
        let width = self.checks.iter().map(|c| c.name.len()).max().unwrap_or(0);
        match (&self.kind[..], self.ok) {
            // A receipt on its own says the same as it always has.
            ("receipt" | "infer response", true) => {
                println!("valid receipt signed by {} (chain {})", r.node, self.receipt.chain_id);
                println!("request {}  mode {}  price {}  payer {}  at {} ms", r.request_id, r.mode, r.price, r.payer, r.timestamp);
                println!("model  sha256:{}", hex::encode(r.model_hash));
                println!("input  {:#x}\noutput {:#x}\ndigest {:#x}", r.input_hash, r.output_hash, self.receipt.digest);
                for c in self.checks.iter().filter(|c| c.name != "signature") {
                    println!("✓ {:<width$}  {}", c.name, c.detail);
                }
            }
            _ => {
                println!("{}: request {}, node {}, mode {}, at {} ms", self.kind, r.request_id, r.node, r.mode, r.timestamp);
                for c in &self.checks {
                    println!("{} {:<width$}  {}", if c.ok { "✓" } else { "✗" }, c.name, c.detail);
                }
                let failed = self.checks.iter().filter(|c| !c.ok).count();
                if failed == 0 {
                    println!("ok: all {} checks passed", self.checks.len());
                } else {
                    println!("FAILED: {failed} of {} checks", self.checks.len());
                }
            }
        }
        if !self.not_checked.is_empty() {
            println!("not checked:");
            for n in &self.not_checked {
                println!("  - {n}");
            }
        }
    }
}

/// What FILE holds.
enum Saved {
    /// A signed receipt, on its own or inside a response (`what` says which), with the
    /// response's output tensors and, when the file carries them, its inputs.
    Receipt { signed: Box<SignedReceipt>, what: &'static str, outputs: Option<Tensors>, inputs: Option<Tensors> },
    /// A completion, whole or streamed.
    Completion(Box<Answer>),
    /// An embeddings answer.
    Embeddings(Value),
}

impl Saved {
    fn read(text: &str) -> anyhow::Result<Self> {
        let doc: Value = match serde_json::from_str(text) {
            Ok(doc) => doc,
            Err(e) => {
                if text.lines().any(|l| l.trim_start().starts_with("data:")) {
                    return Answer::from_events(text).map(|a| Saved::Completion(Box::new(a)));
                }
                return Err(e).context("neither JSON nor a saved stream (`data: {...}` lines)");
            }
        };
        if doc["verinet"]["output_ids"].is_array() {
            let mut answer = Answer::new(kind_of(&doc, false));
            answer.absorb(&doc)?;
            return Ok(Saved::Completion(Box::new(answer)));
        }
        if doc["object"] == "list" && doc["data"].is_array() && doc["verinet"]["receipt"].is_object() {
            return Ok(Saved::Embeddings(doc));
        }
        // A bare receipt; or `infer --json` and `GET /v1/receipts/{id}`, which carry it in "receipt".
        let (receipt, what) = if doc.get("signature").is_some() {
            (doc.clone(), "receipt")
        } else if doc.get("outputs").is_some() {
            (doc.get("receipt").cloned().context("the response has no receipt")?, "infer response")
        } else if doc["receipt"]["signature"].is_string() {
            (doc["receipt"].clone(), "receipt")
        } else {
            bail!("not a receipt, an infer response, a completion (JSON or a saved stream) or an embeddings answer");
        };
        let signed: SignedReceipt = serde_json::from_value(receipt).context("not a verinet receipt")?;
        let (outputs, inputs) = match what {
            "infer response" => (tensors_of(&doc["outputs"]), tensors_of(&doc["inputs"])),
            _ => (None, None),
        };
        Ok(Saved::Receipt { signed: Box::new(signed), what, outputs, inputs })
    }
}

/// `chat completion`, `text completion`, or their streams, from a body's `object`.
fn kind_of(doc: &Value, stream: bool) -> String {
    let what = match doc["object"].as_str() {
        Some(o) if o.starts_with("chat.completion") => "chat completion",
        Some("text_completion") => "text completion",
        _ => "completion",
    };
    if stream { format!("{what} stream") } else { what.to_owned() }
}

/// A completion as the client got it: from one JSON body, or gathered over a stream's chunks.
struct Answer {
    kind: String,
    /// Each body's `id` (every chunk of a stream has one).
    ids: Vec<String>,
    /// Each body's `system_fingerprint` (the model's sha256).
    fingerprints: Vec<String>,
    /// The last finish reason among the choices.
    finish_reason: Option<String>,
    /// The last `usage` (a stream's usage chunk).
    usage: Option<Usage>,
    /// The last `verinet` (a stream's usage chunk, or its finish chunk).
    proof: Option<CompletionProof>,
}

impl Answer {
    fn new(kind: String) -> Self {
        Self { kind, ids: Vec::new(), fingerprints: Vec::new(), finish_reason: None, usage: None, proof: None }
    }

    /// A saved stream: its `data:` lines up to `[DONE]`; other lines (headers, comments) are
    /// skipped.
    fn from_events(text: &str) -> anyhow::Result<Self> {
        let mut answer: Option<Answer> = None;
        let mut events = 0;
        for line in text.lines() {
            let Some(data) = line.trim_start().strip_prefix("data:") else { continue };
            let data = data.trim();
            if data == "[DONE]" {
                break;
            }
            events += 1;
            let chunk: Value = serde_json::from_str(data).with_context(|| format!("stream event {events} is not JSON"))?;
            if let Some(e) = chunk.get("error") {
                bail!("the stream ended with an error, not an answer: {e}");
            }
            answer.get_or_insert_with(|| Answer::new(kind_of(&chunk, true))).absorb(&chunk).with_context(|| format!("stream event {events}"))?;
        }
        let mut answer = answer.context("the stream has no events")?;
        answer.kind = format!("{} ({events} events)", answer.kind);
        Ok(answer)
    }

    fn absorb(&mut self, doc: &Value) -> anyhow::Result<()> {
        if let Some(id) = doc["id"].as_str() {
            self.ids.push(id.to_owned());
        }
        if let Some(f) = doc["system_fingerprint"].as_str() {
            self.fingerprints.push(f.to_owned());
        }
        for choice in doc["choices"].as_array().into_iter().flatten() {
            if let Some(r) = choice["finish_reason"].as_str() {
                self.finish_reason = Some(r.to_owned());
            }
        }
        if !doc["usage"].is_null() {
            self.usage = Some(serde_json::from_value(doc["usage"].clone()).context("usage is not token counts")?);
        }
        if !doc["verinet"].is_null() {
            self.proof = Some(serde_json::from_value(doc["verinet"].clone()).context("verinet is not a completion proof")?);
        }
        Ok(())
    }
}

const NOT_THE_MODEL: &str =
    "that these tokens are what the model produces (a validator's teacher-forced check: verinet verification)";

/// Named tensors read from a saved response, or why they could not be read.
type Tensors = Result<TensorMap, String>;

/// The tensors of a `{name: {dtype, shape, data | b64}}` object; none when the file has none.
fn tensors_of(v: &Value) -> Option<Tensors> {
    let map = v.as_object()?;
    Some(map.iter().map(|(k, t)| serde_json::from_value::<Tensor>(t.clone()).map(|t| (k.clone(), t)).map_err(|e| format!("{k}: {e}"))).collect())
}

/// Recomputes the canonical hash of `tensors` against the signed one.
fn tensors_check(v: &mut Verdict, name: &'static str, tensors: &Tensors, signed: B256) {
    match tensors {
        Ok(t) => {
            let got = tensors_hash(t);
            v.check(name, got == signed, format!("recomputed {got:#x} from the file's {} tensors, signed {signed:#x}", t.len()));
        }
        Err(e) => v.check(name, false, format!("the file's tensors do not parse: {e}")),
    }
}

fn receipt_verdict(signed: &SignedReceipt, what: &str, node: Option<Address>, outputs: Option<Tensors>, inputs: Option<Tensors>) -> Verdict {
    let mut v = Verdict::new(what, signed);
    v.signature(signed, node);
    let id = &signed.receipt.request_id;
    if what == "infer response" {
        match &outputs {
            Some(t) => tensors_check(&mut v, "output_hash", t, signed.receipt.output_hash),
            None => v.check("output_hash", false, "the response has no outputs to recompute the hash from"),
        }
        match &inputs {
            Some(t) => tensors_check(&mut v, "input_hash", t, signed.receipt.input_hash),
            None => v.not_checked("the input hash (the response does not carry the inputs; add them as \"inputs\" to check it)"),
        }
        v.not_checked("that the outputs are what the model computes (re-execution: verinet verification)");
    } else {
        v.not_checked("that the inputs and outputs are the ones hashed (the receipt holds only their hashes)");
    }
    v.not_checked(format!("whether and what the payer was charged (ask the node: GET /v1/receipts/{id})"));
    v
}

fn completion_verdict(a: &Answer, node: Option<Address>, prices: Option<&Prices>) -> anyhow::Result<Verdict> {
    let p = a.proof.as_ref().context("the answer has no verinet proof (a stream cut short before its end?)")?;
    let signed = &p.receipt;
    let r = &signed.receipt;
    let mut v = Verdict::new(&a.kind, signed);
    v.signature(signed, node);
    let Some(t) = &r.completion else {
        v.check("completion_terms", false, "the receipt is a plain tensor receipt: it signs no completion terms");
        return Ok(v);
    };

    let wrong_ids: Vec<&String> =
        a.ids.iter().filter(|id| id.strip_prefix("chatcmpl-").or_else(|| id.strip_prefix("cmpl-")) != Some(&p.request_id[..])).collect();
    v.check(
        "request_id",
        p.request_id == r.request_id && wrong_ids.is_empty(),
        if p.request_id != r.request_id {
            format!("the proof says {}, the receipt {}", p.request_id, r.request_id)
        } else if let Some(id) = wrong_ids.first() {
            format!("answer id {id} is not of request {}", r.request_id)
        } else {
            format!("{} in the receipt, the proof and {} answer id(s)", r.request_id, a.ids.len())
        },
    );
    model_check(&mut v, &p.model.sha256, r.model_hash, &a.fingerprints);
    hash_check(&mut v, "prompt_ids", "prompt", &p.prompt_ids, r.input_hash, "input_hash");
    hash_check(&mut v, "output_ids", "output", &p.output_ids, r.output_hash, "output_hash");
    count_check(&mut v, "prompt_tokens", t.prompt_tokens, p.prompt_ids.len(), "prompt ids");
    count_check(&mut v, "completion_tokens", t.completion_tokens, p.output_ids.len(), "output ids");
    match a.usage {
        Some(u) => {
            let ok = u.prompt_tokens == t.prompt_tokens
                && u.completion_tokens == t.completion_tokens
                && u64::from(u.total_tokens) == u64::from(t.prompt_tokens) + u64::from(t.completion_tokens);
            let got = format!("usage {} prompt + {} completion = {} total", u.prompt_tokens, u.completion_tokens, u.total_tokens);
            let signed = format!("signed {} + {}", t.prompt_tokens, t.completion_tokens);
            v.check("usage", ok, format!("{got} {} {signed}", if ok { "=" } else { "≠" }));
        }
        None => v.not_checked("usage: the answer has none (a stream without stream_options.include_usage)"),
    }
    match &a.finish_reason {
        Some(f) => v.check(
            "finish_reason",
            *f == t.finish_reason,
            format!("{f:?} in the choices {} {:?} signed", if *f == t.finish_reason { "=" } else { "≠" }, t.finish_reason),
        ),
        None => v.check("finish_reason", false, format!("no choice has a finish_reason (signed {:?})", t.finish_reason)),
    }
    v.check("seed", p.seed == t.seed, format!("{} in the proof {} {} signed", p.seed, if p.seed == t.seed { "=" } else { "≠" }, t.seed));
    let charged = p.payment.as_ref().map_or(&p.price, |pay| &pay.amount);
    charge_checks(&mut v, charged, prices, (t.prompt_tokens, t.completion_tokens), "signed");

    v.not_checked(NOT_THE_MODEL);
    v.not_checked("that the prompt ids are the request's messages through the chat template, and the text the output ids detokenized (needs the model's tokenizer)");
    v.not_checked(format!("that the payment was captured (ask the node: GET /v1/receipts/{})", r.request_id));
    Ok(v)
}

fn embeddings_verdict(doc: &Value, node: Option<Address>, prices: Option<&Prices>) -> anyhow::Result<Verdict> {
    let p: EmbeddingProof = serde_json::from_value(doc["verinet"].clone()).context("verinet is not an embeddings proof")?;
    let signed = &p.receipt;
    let r = &signed.receipt;
    let mut v = Verdict::new("embeddings", signed);
    v.signature(signed, node);
    if r.completion.is_some() {
        v.check("receipt_type", false, "a CompletionReceipt, not the tensor receipt an embeddings answer carries");
    }
    let same = p.request_id == r.request_id;
    let detail = if same {
        format!("{} in the receipt and the proof", r.request_id)
    } else {
        format!("the proof says {}, the receipt {}", p.request_id, r.request_id)
    };
    v.check("request_id", same, detail);
    model_check(&mut v, &p.model.sha256, r.model_hash, &[]);
    match embeddings_tensor(&doc["data"]) {
        Ok((tensor, inexact)) => {
            let shape = format!("{:?}", tensor.shape());
            let got = tensors_hash(&TensorMap::from([("embeddings".to_owned(), tensor)]));
            let ok = got == r.output_hash;
            let mut detail = format!(
                "keccak256 of embeddings f32 {shape} {} output_hash {:#x}",
                if ok { "=" } else { "≠" },
                r.output_hash
            );
            if !ok && inexact > 0 {
                detail += &format!(
                    "; {inexact} value(s) are not exact f32 values (the node writes each f32 exactly): edited or re-serialized"
                );
            }
            v.check("embeddings", ok, detail);
        }
        Err(e) => v.check("embeddings", false, e),
    }
    let tokens: Option<u32> = doc["usage"]["prompt_tokens"].as_u64().and_then(|n| u32::try_from(n).ok());
    let charged = p.payment.as_ref().map_or(&p.price, |pay| &pay.amount);
    match tokens {
        Some(n) => charge_checks(&mut v, charged, prices, (n, 0), "usage (not signed)"),
        None => v.check("usage", false, "the answer has no usage.prompt_tokens"),
    }

    v.not_checked("that these vectors are what the model computes (re-running the encoder: verinet verification)");
    v.not_checked("the input token ids and their count: the receipt binds the ids (input_hash), the answer does not return them, and usage is not signed (needs the model's tokenizer)");
    v.not_checked(format!("that the payment was captured (ask the node: GET /v1/receipts/{})", r.request_id));
    Ok(v)
}

fn model_check(v: &mut Verdict, sha: &verinet_primitives::ModelId, model_hash: B256, fingerprints: &[String]) {
    let want = sha.to_string();
    let same = B256::from(*sha.digest()) == model_hash;
    let odd: BTreeSet<&String> = fingerprints.iter().filter(|f| **f != want).collect();
    let detail = if !same {
        format!("the proof names {want}, the receipt signs model_hash {model_hash:#x}")
    } else if let Some(f) = odd.first() {
        format!("system_fingerprint {f} is not the proof's {want}")
    } else {
        format!("{want} = model_hash")
    };
    v.check("model", same && odd.is_empty(), detail);
}

fn hash_check(v: &mut Verdict, name: &'static str, what: &str, ids: &[u32], signed: B256, field: &str) {
    let got = token_ids_hash(ids);
    let ok = got == signed;
    let detail = if ok {
        format!("keccak256 of the {} {what} ids = {field} {signed:#x}", ids.len())
    } else {
        format!("keccak256 of the {} {what} ids is {got:#x}, {field} signs {signed:#x}", ids.len())
    };
    v.check(name, ok, detail);
}

fn count_check(v: &mut Verdict, name: &'static str, signed: u32, len: usize, what: &str) {
    let ok = usize::try_from(signed).is_ok_and(|s| s == len);
    v.check(name, ok, format!("signed {signed} {} {len} {what}", if ok { "=" } else { "≠" }));
}

/// The charge against the prices (with `--prices`), and against the signed maximum (always).
fn charge_checks(v: &mut Verdict, charged: &str, prices: Option<&Prices>, (prompt, completion): (u32, u32), counts: &str) {
    let signed_max = &v.receipt.receipt.price;
    let (Ok(amount), Ok(max)) = (charged.parse::<u128>(), signed_max.parse::<u128>()) else {
        v.check("charge", false, format!("charged {charged:?} or the signed price {signed_max:?} is not an amount"));
        return;
    };
    match prices {
        Some(pr) => {
            let c = pr.charge(u128::from(prompt), u128::from(completion));
            let ok = c.total == amount;
            let mut detail = format!(
                "royalty {} + compute {} + protocol {} = {} for {prompt} prompt + {completion} completion tokens ({counts}) {} charged {amount}",
                c.royalty,
                c.compute,
                c.protocol,
                c.total,
                if ok { "=" } else { "≠" }
            );
            if !ok {
                detail += " (other prices, an app's markup or a verification fee would explain it)";
            }
            v.check("charge", ok, detail);
        }
        None => v.not_checked(
            "the charge: not recomputed (give --prices prompt_per_1k,completion_per_1k,operator_fee_per_1k,protocol_bps)",
        ),
    }
    let ok = amount <= max;
    v.check("within_maximum", ok, format!("charged {amount} {} the signed maximum price {max}", if ok { "≤" } else { ">" }));
}

/// The vectors of `data` as the tensor the receipt hashed, `f32 [n, dims]` in index order, and
/// how many JSON numbers were not exactly an f32 (the node writes each f32's exact value, so a
/// number that is not one was edited or re-serialized).
fn embeddings_tensor(data: &Value) -> Result<(Tensor, usize), String> {
    let mut rows: Vec<(u64, &Value)> = data
        .as_array()
        .ok_or("data is not an array")?
        .iter()
        .map(|d| d["index"].as_u64().map(|i| (i, &d["embedding"])).ok_or_else(|| "an entry has no index".to_owned()))
        .collect::<Result<_, _>>()?;
    rows.sort_by_key(|(i, _)| *i);
    if rows.iter().enumerate().any(|(n, (i, _))| *i != n as u64) {
        return Err("the indices are not 0..n".into());
    }
    let (mut flat, mut dims, mut inexact) = (Vec::<f32>::new(), None, 0);
    for (i, e) in rows {
        let row: Vec<f32> = match e {
            Value::Array(xs) => xs
                .iter()
                .map(|x| {
                    let f = x.as_f64().ok_or_else(|| format!("embedding {i} holds {x}, not a number"))?;
                    // Exact for every f32 the node wrote (it writes the f32's own value).
                    let g = f as f32;
                    inexact += usize::from(f64::from(g) != f);
                    Ok(g)
                })
                .collect::<Result<_, String>>()?,
            Value::String(b64) => {
                let bytes = base64_decode(b64).map_err(|e| format!("embedding {i}: {e}"))?;
                if bytes.len() % 4 != 0 {
                    return Err(format!("embedding {i}: {} bytes, not a whole number of f32s", bytes.len()));
                }
                bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
            }
            other => return Err(format!("embedding {i} is {other}, neither floats nor base64")),
        };
        if *dims.get_or_insert(row.len()) != row.len() {
            return Err(format!("embedding {i} has {} values, the first has {}", row.len(), dims.unwrap_or(0)));
        }
        flat.extend(row);
    }
    let n = data.as_array().map_or(0, Vec::len);
    let tensor = Tensor::from_f32(vec![n, dims.unwrap_or(0)], &flat).map_err(|e| e.to_string())?;
    Ok((tensor, inexact))
}

/// Standard base64 (padded or not), as `encoding_format: "base64"` sends it.
fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return Err(format!("{:?} is not base64", char::from(c))),
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

/// `verinet receipt proof REQUEST_ID`: fetches the request's Merkle inclusion proof from the
/// node and checks it here: the receipt's digest hashes to the leaf, the proof climbs from the
/// leaf to the batch root (OpenZeppelin StandardMerkleTree), and the batch's EIP-712
/// signature recovers the node that sealed it. Exits non-zero if any check fails.
pub async fn proof(a: crate::cli::ReceiptProofArgs) -> anyhow::Result<()> {
    let client = verinet_client::Client::new(&a.node.node);
    let raw = client.get_json(&format!("/v1/receipts/{}/proof", a.request_id)).await?;
    let p: verinet_verify::InclusionProof = serde_json::from_value(raw.clone()).context("the node's proof does not decode")?;
    let b = &p.batch;
    let batch_digest = verinet_verify::batch_hash(b.root, b.size, b.timestamp, b.chain_id);
    let signer = verinet_primitives::secp::recover_hex(&b.signature, &batch_digest);
    let checks = [
        ("leaf", verinet_verify::merkle::leaf_hash(&p.digest) == p.leaf, format!("keccak256(keccak256(abi.encode(bytes32 {}))) = {}", p.digest, p.leaf)),
        ("path", verinet_verify::merkle::verify(b.root, &p.digest, &p.proof), format!("{} sibling(s) climb to root {}", p.proof.len(), b.root)),
        (
            "batch_signature",
            signer.as_ref().is_ok_and(|s| *s == b.node),
            match &signer {
                Ok(s) => format!("signed by {s}, the batch names {}", b.node),
                Err(e) => format!("does not recover: {e}"),
            },
        ),
        ("node", a.signer.as_ref().is_none_or(|want| want.eq_ignore_ascii_case(&b.node.to_string())), format!("sealed by {}", b.node)),
    ];
    let ok = checks.iter().all(|c| c.1);
    if a.json {
        let list: Vec<Value> = checks.iter().map(|(n, ok, d)| serde_json::json!({"name": n, "ok": ok, "detail": d})).collect();
        println!("{}", serde_json::json!({"ok": ok, "request_id": p.request_id, "batch": b.id, "root": b.root, "checks": list, "proof": raw}));
    } else {
        println!("request {} in batch {} ({} receipts, sealed at {} ms)", p.request_id, b.id, b.size, b.timestamp);
        for (name, ok, detail) in &checks {
            println!("{} {name}: {detail}", if *ok { "✓" } else { "✗" });
        }
    }
    if !ok {
        return Err(crate::Shown(format!("the inclusion proof of {} does not check out", p.request_id)).into());
    }
    Ok(())
}
