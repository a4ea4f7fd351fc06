//! `verinet simulate --scenario FILE.toml`: start a node (all roles, one process, throwaway data
//! dir), give it models, apps and users with wallets, drive real paid traffic in two phases,
//! then print the flywheel report over exactly the run. The format is in docs/flywheel.md.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use anyhow::Context;
use serde::Deserialize;
use verinet_client::{Client, ClientError, sign_publish};
use verinet_node::{Config, Node};
use verinet_primitives::{
    Address, ModelId, TensorMap,
    wire::{AppRegistration, InferRequest, PublishRequest, VerificationMode},
};

use crate::cli::SimulateArgs;

/// A scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    name: String,
    /// The bottleneck this scenario is built to show (checked with `--check`).
    #[serde(default)]
    expect: Option<String>,
    #[serde(default)]
    node: NodeSpec,
    #[serde(default)]
    models: ModelsSpec,
    #[serde(default)]
    apps: AppsSpec,
    #[serde(default)]
    users: UsersSpec,
    #[serde(default)]
    demand: DemandSpec,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct NodeSpec {
    workers: usize,
    validators: usize,
    operator_fee: u64,
    operator_cost: u64,
    max_concurrency: usize,
    max_queue: usize,
}

impl Default for NodeSpec {
    fn default() -> Self {
        Self { workers: 1, validators: 1, operator_fee: 100, operator_cost: 0, max_concurrency: 0, max_queue: 256 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ModelsSpec {
    /// Models hosted (copies of the bundled digits model under `model-<i>`).
    count: usize,
    /// Creator royalty per call.
    royalty: u64,
    /// Requests spread over the first this many models.
    used: usize,
}

impl Default for ModelsSpec {
    fn default() -> Self {
        Self { count: 1, royalty: 50, used: 1 }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct AppsSpec {
    count: usize,
    markup: u64,
    /// Share of requests tagged with an app.
    share: f64,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct UsersSpec {
    /// Users per phase.
    count: usize,
    /// Faucet per user, base units.
    funds: u64,
    /// The same users come back in the second phase (else new users replace them).
    returning: bool,
    /// Share of users with no money (their payments fail).
    broke_share: f64,
}

impl Default for UsersSpec {
    fn default() -> Self {
        Self { count: 6, funds: 1_000_000, returning: true, broke_share: 0.0 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct DemandSpec {
    /// Requests per phase.
    requests: usize,
    /// In flight at once.
    concurrency: usize,
    /// `none`, `sampled` or `quorum`.
    mode: String,
    /// Sampling rate of `sampled` requests.
    sample_rate: f64,
}

impl Default for DemandSpec {
    fn default() -> Self {
        Self { requests: 30, concurrency: 2, mode: "none".into(), sample_rate: 0.1 }
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

pub async fn run(a: SimulateArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.scenario).with_context(|| format!("cannot read {}", a.scenario.display()))?;
    let s: Scenario = toml::from_str(&text).with_context(|| format!("{} is not a valid scenario", a.scenario.display()))?;
    let dir = tempfile::tempdir()?;
    let mut config = Config::default();
    config.storage.data_dir = dir.path().to_path_buf();
    config.server.listen = "127.0.0.1:0".parse()?;
    config.verification.workers = s.node.workers.max(1);
    config.verification.validators = s.node.validators;
    config.verification.seed = Some(7);
    config.payments.operator_fee = s.node.operator_fee.to_string();
    config.flywheel.operator_cost_per_request = s.node.operator_cost.to_string();
    config.flywheel.event_flush_ms = 50;
    config.runtime.max_concurrency = s.node.max_concurrency;
    config.runtime.max_queue = s.node.max_queue;
    let node = Node::spawn(&config).await?;
    let client = Client::new(node.url());
    eprintln!("simulating {:?} on {}", s.name, node.url());

    // Models: copies of the bundled model under new names, owned by one creator. Each copy
    // carries its own ONNX doc_string (field 6 of ModelProto, appended: the last value wins and
    // the graph is the same), because the bundled bytes belong to the node (a content hash has
    // one owner).
    let creator = PrivateKeySigner::random();
    for i in 0..s.models.count {
        let mut bytes = verinet_node::bundled::DIGITS.bytes.to_vec();
        let doc = format!("verinet simulate: model-{i}");
        bytes.extend_from_slice(&[0x32, doc.len() as u8]);
        bytes.extend_from_slice(doc.as_bytes());
        let meta = PublishRequest {
            name: format!("model-{i}"),
            version: "1.0.0".parse()?,
            description: format!("simulated model {i}"),
            tags: vec!["sim".into()],
            license: "MIT".into(),
            price: s.models.royalty.to_string(),
            owner: Address::ZERO,
            timestamp: 0,
            signature: String::new(),
            sha256: None,
            verification: None,
            kind: None,
            token_prices: None,
        };
        let signed = sign_publish(meta, ModelId::of_bytes(&bytes), &creator, now()).map_err(|e| anyhow::anyhow!("{e}"))?;
        client.publish_bytes(&signed, bytes.clone()).await?;
    }
    // Apps.
    let mut apps = Vec::new();
    for i in 0..s.apps.count {
        let owner = PrivateKeySigner::random();
        let mut reg = AppRegistration {
            name: format!("app-{i}"),
            owner: owner.address(),
            markup: s.apps.markup.to_string(),
            timestamp: now(),
            signature: String::new(),
        };
        reg.signature = format!("0x{}", hex::encode(owner.sign_message_sync(reg.message().as_bytes())?.as_bytes()));
        apps.push(client.register_app(&reg).await?.id);
    }
    let inputs: TensorMap = serde_json::from_str(crate::up::SAMPLE)?;
    let mode = match s.demand.mode.as_str() {
        "none" => VerificationMode::None,
        "sampled" => VerificationMode::Sampled,
        "quorum" => VerificationMode::Quorum,
        other => anyhow::bail!("demand.mode {other:?}: use none, sampled or quorum"),
    };

    let started = Instant::now();
    // Middle of the quiet gap between the phases, set after phase one.
    let mut gap_middle = Duration::ZERO;
    let mut users = make_users(&client, &s.users).await?;
    let (mut ok, mut failed) = (0usize, 0usize);
    for phase in 0..2 {
        if phase == 1 && !s.users.returning {
            users = make_users(&client, &s.users).await?;
        }
        let users = Arc::new(users.clone());
        let apps = Arc::new(apps.clone());
        let per_task = s.demand.requests / s.demand.concurrency.max(1);
        let tasks: Vec<_> = (0..s.demand.concurrency.max(1))
            .map(|t| {
                let (client, users, apps, inputs) = (client.clone(), users.clone(), apps.clone(), inputs.clone());
                let (models_used, app_share, sample_rate) = (s.models.used.max(1), s.apps.share, s.demand.sample_rate);
                tokio::spawn(async move {
                    let (mut ok, mut failed) = (0usize, 0usize);
                    for i in 0..per_task {
                        let k = t * per_task + i;
                        let app = (!apps.is_empty() && (k % 100) as f64 / 100.0 < app_share).then(|| apps[k % apps.len()].clone());
                        let req = InferRequest {
                            app,
                            verification: mode,
                            sample_rate: (mode == VerificationMode::Sampled).then_some(sample_rate),
                            ..InferRequest::new(format!("model-{}", k % models_used), inputs.clone())
                        };
                        match client.infer_paid(&req, &users[k % users.len()]).await {
                            Ok(_) => ok += 1,
                            Err(ClientError::Api { .. }) => failed += 1,
                            Err(e) => return Err(e),
                        }
                    }
                    Ok((ok, failed))
                })
            })
            .collect();
        for t in tasks {
            let (o, f) = t.await??;
            ok += o;
            failed += f;
        }
        // A quiet gap between the phases, long against either phase, so the middle of the
        // reported window falls in it: "returning" then means "seen in both phases".
        if phase == 0 {
            let phase_one = started.elapsed();
            let gap = phase_one.max(Duration::from_millis(500)) * 3;
            gap_middle = phase_one + gap / 2;
            tokio::time::sleep(gap).await;
        }
    }
    // The report splits its window in halves ("returning" users appear in both). Choose a
    // window of whole seconds that covers the run and query when its middle is the middle of the
    // gap, so the halves are exactly the two phases however fast they ran.
    let run = started.elapsed();
    let half = gap_middle.max(run.saturating_sub(gap_middle)) + Duration::from_millis(500);
    let window = (half * 2).as_secs() + 1;
    let query_at = gap_middle + Duration::from_millis(window * 500);
    tokio::time::sleep(query_at.saturating_sub(started.elapsed())).await;
    let report = client.flywheel(window).await?;
    node.stop().await?;
    eprintln!("{ok} requests answered, {failed} refused, over {window} s");
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("scenario {:?}", s.name);
        crate::flywheel::print(&report);
    }
    if a.check
        && let Some(expect) = &s.expect
    {
        anyhow::ensure!(
            &report.bottleneck.layer == expect,
            "scenario {:?} expected bottleneck {expect}, the report names {}: {}",
            s.name,
            report.bottleneck.layer,
            report.bottleneck.reason
        );
    }
    Ok(())
}

/// Users with wallets; a share of them broke (funded with 1 base unit, less than any price).
async fn make_users(client: &Client, spec: &UsersSpec) -> anyhow::Result<Vec<PrivateKeySigner>> {
    let mut users = Vec::new();
    for i in 0..spec.count.max(1) {
        let key = PrivateKeySigner::random();
        let broke = (i as f64) < spec.broke_share * spec.count as f64;
        client.faucet(key.address(), Some(if broke { 1 } else { u128::from(spec.funds) })).await?;
        users.push(key);
    }
    Ok(users)
}
