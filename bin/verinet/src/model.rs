//! `verinet model push|ls|show`.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncReadExt;
use verinet_client::{Client, ListParams, sign_publish};
use verinet_primitives::{Address, Sha256Hasher, wire::PublishRequest};

use crate::{
    cli::{LsArgs, PushArgs, ShowArgs},
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

    let meta = PublishRequest {
        name: a.name,
        version: a.version,
        description: a.description,
        tags: a.tags,
        license: a.license,
        price: a.price,
        owner: Address::ZERO,
        timestamp: 0,
        signature: String::new(),
        sha256: None,
        verification: None,
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
    let client = Client::new(&a.node.node);
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
                m.price.clone(),
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
    let v = match a.model.split_once('@') {
        Some((name, version)) => client.model_version(name, version).await?,
        None => client.model(&a.model).await?.latest,
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    println!("{}@{}", v.name, v.version);
    println!("  sha256   {}", v.sha256);
    println!("  size     {} bytes", v.size);
    println!("  owner    {}", v.owner);
    println!("  price    {} (royalty {})", v.price.total, v.price.royalty);
    println!("  usage    {} calls, {} failures", v.usage.calls, v.usage.failures);
    if !v.tags.is_empty() {
        println!("  tags     {}", v.tags.join(", "));
    }
    if !v.description.is_empty() {
        println!("  about    {}", v.description);
    }
    output::print_io(&v.io);
    Ok(())
}
