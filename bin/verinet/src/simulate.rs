//! `verinet simulate --scenario FILE.toml`: start a node (all roles, one process, throwaway data
//! dir), give it the scenario's models (and no others), apps and users with wallets, drive real
//! paid traffic in one or two phases, then print the flywheel report whose window holds the
//! second phase and whose window before holds the first. The format is in docs/flywheel.md.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
    /// The next worst layer it is built to show (checked with `--check`).
    #[serde(default)]
    expect_runner_up: Option<String>,
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
    /// Reputation below which an executor gets no work (the node's default when absent).
    min_reputation: Option<f64>,
    /// Stake taken per proven cheat, base units (the node's default when absent; a small one
    /// keeps a cheater staked and serving).
    slash_amount: Option<u64>,
    /// Share of worker 0's results it corrupts (a cheating worker; needs a build with the
    /// `simulate-faults` feature).
    cheater_share: f64,
    /// Extra milliseconds every run of worker 0 takes (a slow worker; needs `simulate-faults`).
    slow_worker_ms: u64,
}

impl Default for NodeSpec {
    fn default() -> Self {
        Self {
            workers: 1,
            validators: 1,
            operator_fee: 100,
            operator_cost: 0,
            max_concurrency: 0,
            max_queue: 256,
            min_reputation: None,
            slash_amount: None,
            cheater_share: 0.0,
            slow_worker_ms: 0,
        }
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

#[derive(Debug, Clone, Deserialize)]
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
    /// Broke users come back in the second phase (else only the funded ones do).
    broke_return: bool,
    /// Users who first come in the second phase.
    new_in_phase_two: usize,
}

impl Default for UsersSpec {
    fn default() -> Self {
        Self { count: 6, funds: 1_000_000, returning: true, broke_share: 0.0, broke_return: true, new_in_phase_two: 0 }
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
    /// 2: the window before holds phase one and the window phase two; 1: one burst on a node
    /// with no history before it.
    phases: usize,
}

impl Default for DemandSpec {
    fn default() -> Self {
        Self { requests: 30, concurrency: 2, mode: "none".into(), sample_rate: 0.1, phases: 2 }
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
    // The scenario's models are all that is hosted.
    config.bundled.publish = false;
    anyhow::ensure!(matches!(s.demand.phases, 1 | 2), "demand.phases {}: use 1 or 2", s.demand.phases);
    if let Some(r) = s.node.min_reputation {
        config.verification.min_reputation = r;
    }
    if let Some(a) = s.node.slash_amount {
        config.verification.slash_amount = a.to_string();
    }
    let node = Node::spawn_with(&config, faults(&s.node)?).await?;
    // The window before starts on the second the node started: its history reaches back that far.
    let origin = unix_ms() / 1000 * 1000;
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

    let mut users = make_users(&client, s.users.count, &s.users).await?;
    let (mut ok, mut failed) = (0usize, 0usize);
    let mut window_ms = 0i64;
    for phase in 0..s.demand.phases {
        if phase == 1 {
            // The window is twice phase one so far, and 2 s more: long enough for phase two.
            window_ms = ((unix_ms() - origin) * 2 + 2999) / 1000 * 1000;
            let mut next: Vec<PrivateKeySigner> = users
                .iter()
                .enumerate()
                .filter(|(i, _)| s.users.broke_return || !is_broke(*i, users.len(), s.users.broke_share))
                .map(|(_, u)| u.clone())
                .collect();
            if !s.users.returning {
                next = make_users(&client, s.users.count, &s.users).await?;
            }
            next.extend(make_users(&client, s.users.new_in_phase_two, &UsersSpec { broke_share: 0.0, ..s.users.clone() }).await?);
            anyhow::ensure!(!next.is_empty(), "phase two has no users");
            users = next;
            tokio::time::sleep(Duration::from_millis(u64::try_from(origin + window_ms - unix_ms()).unwrap_or(0))).await;
        }
        let (o, f) = drive(&client, &s, &users, &apps, &inputs, mode).await?;
        ok += o;
        failed += f;
    }
    let end = if s.demand.phases == 2 {
        let end = origin + 2 * window_ms;
        anyhow::ensure!(unix_ms() < end, "phase two ran past its window; lower demand.requests or raise demand.concurrency");
        end
    } else {
        // One burst: the window holds it, and there is no history before it.
        window_ms = ((unix_ms() - origin) + 1999) / 1000 * 1000;
        origin + window_ms
    };
    let window = u64::try_from(window_ms / 1000).unwrap_or(1);
    let report = client.flywheel_until(window, end).await?;
    node.stop().await?;
    eprintln!("{ok} requests answered, {failed} refused, over {window} s windows");
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("scenario {:?}", s.name);
        crate::flywheel::print(&report);
    }
    if a.check {
        if let Some(expect) = &s.expect {
            anyhow::ensure!(
                &report.bottleneck.layer == expect,
                "scenario {:?} expected bottleneck {expect}, the report names {}: {}",
                s.name,
                report.bottleneck.layer,
                report.bottleneck.reason
            );
        }
        if let Some(expect) = &s.expect_runner_up {
            anyhow::ensure!(
                report.bottleneck.runner_up.as_ref() == Some(expect),
                "scenario {:?} expected runner-up {expect}, the report names {:?} (scores {:?})",
                s.name,
                report.bottleneck.runner_up,
                report.scores.iter().map(|x| (x.layer.as_str(), x.score)).collect::<Vec<_>>()
            );
        }
    }
    Ok(())
}

/// The node's fault injection: worker 0 corrupting `cheater_share` of its results, or taking
/// `slow_worker_ms` longer per run.
#[cfg(feature = "simulate-faults")]
fn faults(spec: &NodeSpec) -> anyhow::Result<verinet_node::Overrides> {
    use verinet_runtime::{
        InferenceBackend, TractBackend,
        test_utils::{CorruptingBackend, SlowBackend},
    };
    let mut backend: Arc<dyn InferenceBackend> = Arc::new(TractBackend::new());
    if spec.slow_worker_ms > 0 {
        backend = Arc::new(SlowBackend::new(backend, Duration::from_millis(spec.slow_worker_ms)));
    }
    if spec.cheater_share > 0.0 {
        backend = Arc::new(CorruptingBackend::new(backend, spec.cheater_share, 7));
    }
    if spec.slow_worker_ms == 0 && spec.cheater_share <= 0.0 {
        return Ok(verinet_node::Overrides::default());
    }
    Ok(verinet_node::Overrides { worker_backends: vec![(0, backend)], ..Default::default() })
}

#[cfg(not(feature = "simulate-faults"))]
fn faults(spec: &NodeSpec) -> anyhow::Result<verinet_node::Overrides> {
    anyhow::ensure!(
        spec.cheater_share <= 0.0 && spec.slow_worker_ms == 0,
        "node.cheater_share and node.slow_worker_ms need a verinet built with the simulate-faults feature (cargo build --features verinet/simulate-faults): a cheating or slow worker is a test double"
    );
    Ok(verinet_node::Overrides::default())
}

fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// One phase: `demand.requests` paid calls from `users`, `demand.concurrency` at a time.
async fn drive(
    client: &Client,
    s: &Scenario,
    users: &[PrivateKeySigner],
    apps: &[String],
    inputs: &TensorMap,
    mode: VerificationMode,
) -> anyhow::Result<(usize, usize)> {
    let users = Arc::new(users.to_vec());
    let apps = Arc::new(apps.to_vec());
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
    let (mut ok, mut failed) = (0, 0);
    for t in tasks {
        let (o, f) = t.await??;
        ok += o;
        failed += f;
    }
    Ok((ok, failed))
}

/// User `i` of `count` is one of the broke share (the first ones).
fn is_broke(i: usize, count: usize, share: f64) -> bool {
    (i as f64) < share * count as f64
}

/// `count` users with wallets; a share of them broke (funded with 1 base unit, less than any
/// price).
async fn make_users(client: &Client, count: usize, spec: &UsersSpec) -> anyhow::Result<Vec<PrivateKeySigner>> {
    let mut users = Vec::new();
    for i in 0..count {
        let key = PrivateKeySigner::random();
        let broke = is_broke(i, count, spec.broke_share);
        client.faucet(key.address(), Some(if broke { 1 } else { u128::from(spec.funds) })).await?;
        users.push(key);
    }
    Ok(users)
}
