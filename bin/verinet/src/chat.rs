//! `verinet chat MODEL` and `verinet embed MODEL TEXT...`: the language models through the
//! node's OpenAI-compatible routes.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::AsyncBufReadExt;
use verinet_client::Client;
use verinet_primitives::openai::{
    ChatCompletionRequest, ChatMessageIn, CompletionProof, Content, EmbeddingInput, EmbeddingRequest, GenerationOptions,
    StreamOptions, Usage,
};

use crate::{
    cli::{ChatArgs, EmbedArgs},
    output,
};

/// One `--prompt`, or a conversation read line by line from stdin. Answers stream to stdout;
/// a footer per answer goes to stderr, so stdout holds only what the model said.
pub async fn chat(a: ChatArgs) -> anyhow::Result<()> {
    let client = Client::new(&a.node.node);
    let mut req = ChatCompletionRequest {
        model: a.model.clone(),
        messages: a.system.iter().map(|s| message("system", s)).collect(),
        options: GenerationOptions {
            max_tokens: a.max_tokens,
            temperature: Some(a.temperature),
            seed: a.seed,
            stream_options: Some(StreamOptions { include_usage: true }),
            ..GenerationOptions::default()
        },
    };
    if let Some(prompt) = &a.prompt {
        req.messages.push(message("user", prompt));
        if a.json {
            println!("{}", serde_json::to_string_pretty(&client.chat(&req).await?)?);
        } else {
            answer(&client, &req).await?;
        }
        return Ok(());
    }

    // Someone typing gets a prompt marker and keeps going after a failed turn; piped input
    // stops at the first failure, so a script sees the exit status.
    let interactive = std::io::stdin().is_terminal();
    if interactive {
        eprintln!("{}", dim(&format!("chatting with {} at {}; an empty line or Ctrl-D ends", a.model, client.base())));
    }
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    loop {
        if interactive {
            eprint!("> ");
        }
        let Some(line) = lines.next_line().await.context("cannot read stdin")? else { break };
        let line = line.trim();
        if line.is_empty() {
            break;
        }
        req.messages.push(message("user", line));
        match answer(&client, &req).await {
            Ok(text) => req.messages.push(message("assistant", &text)),
            Err(e) if interactive => {
                // The turn never happened: forget the question so the next one starts clean.
                req.messages.pop();
                eprintln!("error: {e:#}");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn message(role: &str, text: &str) -> ChatMessageIn {
    ChatMessageIn { role: role.to_owned(), content: Some(Content::Text(text.to_owned())) }
}

/// Streams one answer to stdout (flushed per chunk), then its footer; returns the text.
async fn answer(client: &Client, req: &ChatCompletionRequest) -> anyhow::Result<String> {
    let started = Instant::now();
    let mut stream = client.chat_stream(req).await?;
    let mut text = String::new();
    let mut first_token = None;
    let (mut usage, mut proof, mut finish) = (None, None, None);
    let mut stdout = std::io::stdout();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        for choice in chunk.choices {
            if let Some(t) = choice.delta.content.filter(|t| !t.is_empty()) {
                first_token.get_or_insert_with(|| started.elapsed());
                stdout.write_all(t.as_bytes())?;
                stdout.flush()?;
                text.push_str(&t);
            }
            finish = choice.finish_reason.or(finish);
        }
        usage = chunk.usage.or(usage);
        proof = chunk.verinet.or(proof);
    }
    writeln!(stdout)?;
    let footer = Footer { usage, proof: proof.as_ref(), finish: finish.as_deref(), first_token, total: started.elapsed() };
    eprintln!("{}", dim(&footer.to_string()));
    Ok(text)
}

/// `12 in, 8 out · first token 85 ms · 41.2 tok/s · signed 0x5f3a…91c2 · req <id>`, times as
/// this client saw them.
struct Footer<'a> {
    usage: Option<Usage>,
    proof: Option<&'a CompletionProof>,
    finish: Option<&'a str>,
    first_token: Option<Duration>,
    total: Duration,
}

impl std::fmt::Display for Footer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Token counts from the usage chunk, else from the ids the proof carries.
        let (tokens_in, tokens_out) = match (self.usage, self.proof) {
            (Some(u), _) => (u.prompt_tokens as usize, u.completion_tokens as usize),
            (None, Some(p)) => (p.prompt_ids.len(), p.output_ids.len()),
            (None, None) => (0, 0),
        };
        write!(f, "{tokens_in} in, {tokens_out} out")?;
        if self.finish == Some("length") {
            write!(f, " (cut at max tokens)")?;
        }
        if let Some(first) = self.first_token {
            write!(f, " · first token {:.0} ms", first.as_secs_f64() * 1e3)?;
            // Decode speed: the tokens after the first over the time after it.
            let decode = self.total.saturating_sub(first).as_secs_f64();
            if tokens_out > 1 && decode > 0.0 {
                write!(f, " · {:.1} tok/s", (tokens_out - 1) as f64 / decode)?;
            }
        }
        if let Some(p) = self.proof {
            let signer = p.receipt.receipt.node.to_string();
            let short = format!("{}…{}", &signer[..6], &signer[signer.len() - 4..]);
            write!(f, " · signed {short} · req {}", p.request_id)?;
        }
        Ok(())
    }
}

/// Faint on a terminal, plain in a pipe or file.
fn dim(s: &str) -> String {
    if std::io::stderr().is_terminal() { format!("\x1b[2m{s}\x1b[0m") } else { s.to_owned() }
}

/// Most texts for which the cosine matrix is printed (wider does not fit a terminal).
const MAX_MATRIX: usize = 8;

/// All texts in one request; a row per vector, and for 2 to 8 texts their cosine similarities.
pub async fn embed(a: EmbedArgs) -> anyhow::Result<()> {
    let mut texts = a.texts;
    if let Some(path) = &a.input {
        let file = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        texts.extend(file.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned));
    }
    anyhow::ensure!(!texts.is_empty(), "nothing to embed: give texts as arguments or --input FILE");
    let client = Client::new(&a.node.node);
    let req = EmbeddingRequest {
        model: a.model,
        input: EmbeddingInput::Many(texts.clone()),
        encoding_format: None,
        dimensions: None,
        app: None,
        verification: Default::default(),
        sample_rate: None,
    };
    let resp = client.embeddings(&req).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&resp)?);
        return Ok(());
    }

    let mut vectors: Vec<(usize, Vec<f64>)> = resp
        .data
        .iter()
        .map(|d| Ok((d.index as usize, floats(&d.embedding).with_context(|| format!("embedding {}", d.index))?)))
        .collect::<anyhow::Result<_>>()?;
    vectors.sort_by_key(|(i, _)| *i);
    let p = &resp.verinet;
    println!("{}@{}  {}", p.model.name, p.model.version, p.model.sha256);
    println!(
        "request {}  tokens {}  price {}  total {:.2} ms  signed by {}",
        p.request_id, resp.usage.total_tokens, p.price, p.total_ms, p.receipt.receipt.node
    );
    let rows: Vec<Vec<String>> = vectors
        .iter()
        .map(|(i, v)| {
            let first: Vec<String> = v.iter().take(4).map(|x| format!("{x:.4}")).collect();
            let text = texts.get(*i).map(String::as_str).unwrap_or_default();
            vec![
                i.to_string(),
                v.len().to_string(),
                format!("{:.4}", norm(v)),
                format!("[{}, …]", first.join(", ")),
                clip(text, 40),
            ]
        })
        .collect();
    output::table(&["#", "DIMS", "NORM", "FIRST VALUES", "TEXT"], &rows);

    if (2..=MAX_MATRIX).contains(&vectors.len()) {
        println!("\ncosine similarity");
        let mut headers = vec![String::new()];
        headers.extend(vectors.iter().map(|(i, _)| i.to_string()));
        let rows: Vec<Vec<String>> = vectors
            .iter()
            .map(|(i, a)| {
                let mut row = vec![i.to_string()];
                row.extend(vectors.iter().map(|(_, b)| format!("{:.3}", cosine(a, b))));
                row
            })
            .collect();
        output::table(&headers.iter().map(String::as_str).collect::<Vec<_>>(), &rows);
    }
    Ok(())
}

/// The float form of an embedding (the CLI never asks for base64).
fn floats(v: &serde_json::Value) -> anyhow::Result<Vec<f64>> {
    v.as_array().context("not a float array")?.iter().map(|x| x.as_f64().context("not a number")).collect()
}

fn norm(v: &[f64]) -> f64 {
    v.iter().map(|x| x * x).sum::<f64>().sqrt()
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = norm(a) * norm(b);
    if n == 0.0 { 0.0 } else { dot / n }
}

fn clip(s: &str, max: usize) -> String {
    if s.chars().count() <= max { s.to_owned() } else { format!("{}…", s.chars().take(max - 1).collect::<String>()) }
}
