//! `verinet model push|ls|show`.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncReadExt;
use verinet_client::{Client, ListParams, sign_publish};
use verinet_primitives::{Address, Sha256Hasher, wire::PublishRequest};

use crate::{
    cli::{LsArgs, PullArgs, PushArgs, ShowArgs},
    money::Units,
    output, wallet,
};

pub async fn push(mut a: PushArgs) -> anyhow::Result<()> {
    let key = wallet::load(&a.wallet)?;
    // A zipped encoder folder is published as its canonical bundle (one blob, one sha256).
    let _bundle_file;
    if a.file.extension().is_some_and(|e| e.eq_ignore_ascii_case("zip")) {
        let zip = tokio::fs::read(&a.file).await.with_context(|| format!("cannot read {}", a.file.display()))?;
        let bundle = verinet_llm::bundle_from_zip(&zip)?;
        let tmp = tempfile::NamedTempFile::new()?;
        tokio::fs::write(tmp.path(), &bundle).await?;
        a.file = tmp.path().to_path_buf();
        _bundle_file = tmp;
    }
    let len = tokio::fs::metadata(&a.file).await.with_context(|| format!("cannot read {}", a.file.display()))?.len();

    // Hash first (the signature covers the sha256), streaming so big models stay out of memory.
    let mut file = tokio::fs::File::open(&a.file).await?;
    let mut hasher = Sha256Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let id = hasher.finish();

    // A new version keeps what the last one said unless this push says otherwise: leaving out
    // --tag must not drop the model from `model ls --tag`.
    let client = Client::new(&a.node.node);
    let previous = match client.model(&a.name).await {
        Ok(m) => Some(m.latest),
        Err(verinet_client::ClientError::Api { status: 404, .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let tags = if a.tags.is_empty() { previous.as_ref().map(|p| p.tags.clone()).unwrap_or_default() } else { a.tags };
    let description = a.description.or_else(|| previous.as_ref().map(|p| p.description.clone())).unwrap_or_default();
    let license = a.license.or_else(|| previous.as_ref().map(|p| p.license.clone())).unwrap_or_default();
    let price = match (a.price, &previous) {
        (Some(p), _) => p.to_string(),
        (None, Some(p)) if p.price.per_1k_tokens.is_none() => p.price.royalty.clone(),
        _ => "0".into(),
    };
    let policy = verinet_primitives::wire::ModelPolicy { sample_rate: a.sample_rate, tolerance_abs: a.tolerance_abs, tolerance_rel: a.tolerance_rel };
    let verification = if policy == verinet_primitives::wire::ModelPolicy::default() {
        previous.as_ref().and_then(|p| p.verification.clone())
    } else {
        Some(serde_json::to_value(policy)?)
    };
    let meta = PublishRequest {
        name: a.name,
        version: a.version,
        description,
        tags,
        license,
        price,
        owner: Address::ZERO,
        timestamp: 0,
        signature: String::new(),
        sha256: None,
        verification,
        kind: a.kind,
        token_prices: (a.prompt_price_per_1k.is_some() || a.completion_price_per_1k.is_some()).then(|| {
            verinet_primitives::wire::TokenPrices {
                prompt_per_1k: a.prompt_price_per_1k.unwrap_or(0),
                completion_per_1k: a.completion_price_per_1k.unwrap_or(0),
            }
        }),
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let meta = sign_publish(meta, id, key.signer(), now)?;

    let bar = ProgressBar::new(len);
    bar.set_style(ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {msg}")?);
    let b = bar.clone();
    let result = client.publish_file(&meta, &a.file, move |sent| b.set_position(sent)).await;
    bar.finish_and_clear();
    let v = result?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("published {}@{}  {}  {} bytes", v.name, v.version, v.sha256, v.size);
        output::print_io(&v.io);
    }
    Ok(())
}

pub async fn ls(a: LsArgs) -> anyhow::Result<()> {
    let client = Client::new(&a.node.node);
    let units = Units::of(&client).await;
    let list = client.list_models(&ListParams { q: a.q, tag: a.tag, sort: a.sort, limit: None }).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = list
        .models
        .iter()
        .map(|m| {
            vec![
                m.name.clone(),
                m.latest_version.to_string(),
                m.usage.calls.to_string(),
                units.show(&m.price),
                m.tags.join(","),
                m.sha256.to_string()[..19].to_owned(),
            ]
        })
        .collect();
    output::table(&["NAME", "LATEST", "CALLS", "PRICE", "TAGS", "SHA256"], &rows);
    Ok(())
}

pub async fn show(a: ShowArgs) -> anyhow::Result<()> {
    let client = Client::new(&a.node.node);
    let units = Units::of(&client).await;
    let (v, model) = match a.model.split_once('@') {
        Some((name, version)) => (client.model_version(name, version).await?, None),
        None => {
            let m = client.model(&a.model).await?;
            (m.latest.clone(), Some(m))
        }
    };
    if a.json {
        match &model {
            Some(m) => println!("{}", serde_json::to_string_pretty(m)?),
            None => println!("{}", serde_json::to_string_pretty(&v)?),
        }
        return Ok(());
    }
    println!("{}@{}", v.name, v.version);
    println!("  sha256   {}", v.sha256);
    println!("  size     {} bytes", v.size);
    println!("  owner    {}", v.owner);
    match &v.price.per_1k_tokens {
        Some(t) => println!("  price    {} per 1k prompt tokens, {} per 1k completion tokens", units.show(&t.prompt), units.show(&t.completion)),
        None => println!("  price    {} per call (royalty {})", units.show(&v.price.total), units.show(&v.price.royalty)),
    }
    println!("  usage    {} calls, {} failures (this version)", v.usage.calls, v.usage.failures);
    if let Some(m) = &model {
        println!("  all      {} calls, {} failures over {} version(s)", m.usage.calls, m.usage.failures, m.versions.len());
        let versions: Vec<String> = m.versions.iter().map(ToString::to_string).collect();
        println!("  versions {}", versions.join(", "));
    }
    if !v.tags.is_empty() {
        println!("  tags     {}", v.tags.join(", "));
    }
    if !v.description.is_empty() {
        println!("  about    {}", v.description);
    }
    if !v.license.is_empty() {
        println!("  license  {}", v.license);
    }
    if let Some(p) = &v.verification {
        println!("  policy   {p}");
    }
    output::print_io(&v.io);
    Ok(())
}

pub async fn pull(a: PullArgs) -> anyhow::Result<()> {
    let client = Client::new(&a.node.node);
    let v = match a.model.split_once('@') {
        Some((name, version)) => client.model_version(name, version).await?,
        None => client.model(&a.model).await?.latest,
    };
    let out = a.output.unwrap_or_else(|| {
        let ext = match v.io.kind {
            verinet_primitives::ModelKind::Llm => "gguf",
            verinet_primitives::ModelKind::Embedding => "bundle",
            _ => "onnx",
        };
        std::path::PathBuf::from(format!("{}-{}.{ext}", v.name, v.version))
    });
    // The client hashes the bytes as they arrive and refuses any that are not the id.
    let bytes = client.fetch_model(&v.sha256).await?;
    tokio::fs::write(&out, &bytes).await.with_context(|| format!("cannot write {}", out.display()))?;
    if a.json {
        println!("{}", serde_json::json!({"path": out, "sha256": v.sha256, "size": bytes.len(), "name": v.name, "version": v.version}));
    } else {
        println!("saved {}@{} to {} ({} bytes, {} checked)", v.name, v.version, out.display(), bytes.len(), v.sha256);
    }
    Ok(())
}
