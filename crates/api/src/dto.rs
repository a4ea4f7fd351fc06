//! Storage records -> wire bodies.

use verinet_ledger::{FeeSchedule, Payees};
use verinet_primitives::{
    ModelKind,
    wire::{ModelInfo, ModelListItem, ModelVersionInfo, PriceInfo, TokenPriceInfo, UsageInfo, VerificationMode},
};
use verinet_store::{ModelSummary, ModelVersion, Usage};

/// The price of one call in mode `none` without an app (what a listing shows; every 402
/// quotes the exact price of the request at hand).
pub(crate) fn price_of(v: &ModelVersion, fees: &FeeSchedule) -> PriceInfo {
    let nobody = Payees { creator: v.owner, operator: v.owner, protocol: v.owner, app: None };
    let per_1k_tokens = per_1k_tokens(v, fees);
    let q = match per_1k_tokens {
        // Priced by the token (a per-call royalty of a language model published without token
        // prices is charged with its tokens).
        Some(_) => fees.quote_tokens(v.price, 0, VerificationMode::None, 0, nobody),
        None => fees.quote(v.price, VerificationMode::None, 0, nobody),
    };
    PriceInfo {
        royalty: q.royalty.to_string(),
        operator_fee: q.compute.to_string(),
        protocol_fee: q.protocol.to_string(),
        total: q.total.to_string(),
        per_1k_tokens,
    }
}

/// What 1,000 prompt and 1,000 completion tokens of a language or embedding model cost.
fn per_1k_tokens(v: &ModelVersion, fees: &FeeSchedule) -> Option<TokenPriceInfo> {
    if v.signature.kind == ModelKind::Onnx {
        return None;
    }
    let nobody = Payees { creator: v.owner, operator: v.owner, protocol: v.owner, app: None };
    let tokens = |prompt: u64, completion: u64| {
        let royalty = v.token_prices.map_or(0, |t| t.royalty(prompt, completion));
        fees.quote_tokens(royalty, prompt + completion, VerificationMode::None, 0, nobody).total.to_string()
    };
    Some(TokenPriceInfo { prompt: tokens(1000, 0), completion: tokens(0, 1000), royalty: v.token_prices })
}

pub(crate) fn usage(u: &Usage) -> UsageInfo {
    UsageInfo { calls: u.calls, failures: u.failures, last_called_at_ms: u.last_called_at_ms }
}

pub(crate) fn version_info(v: &ModelVersion, fees: &FeeSchedule) -> ModelVersionInfo {
    ModelVersionInfo {
        name: v.name.clone(),
        version: v.version.clone(),
        sha256: v.id,
        size: v.size,
        owner: v.owner,
        description: v.description.clone(),
        tags: v.tags.clone(),
        license: v.license.clone(),
        price: price_of(v, fees),
        io: v.signature.clone(),
        verification: v.policy.as_deref().and_then(|p| serde_json::from_str(p).ok()),
        published_at_ms: v.published_at_ms,
        usage: usage(&v.usage),
    }
}

pub(crate) fn model_info(versions: &[ModelVersion], fees: &FeeSchedule) -> Option<ModelInfo> {
    let latest = versions.first()?;
    let mut total = UsageInfo::default();
    for v in versions {
        total.calls += v.usage.calls;
        total.failures += v.usage.failures;
        total.last_called_at_ms = total.last_called_at_ms.max(v.usage.last_called_at_ms);
    }
    Some(ModelInfo {
        name: latest.name.clone(),
        owner: latest.owner,
        latest: version_info(latest, fees),
        versions: versions.iter().map(|v| v.version.clone()).collect(),
        usage: total,
    })
}

pub(crate) fn list_item(s: &ModelSummary, fees: &FeeSchedule) -> ModelListItem {
    ModelListItem {
        name: s.name.clone(),
        owner: s.owner,
        latest_version: s.latest.version.clone(),
        sha256: s.latest.id,
        kind: s.latest.signature.kind,
        published_at_ms: s.latest.published_at_ms,
        description: s.latest.description.clone(),
        tags: s.latest.tags.clone(),
        price: price_of(&s.latest, fees).total,
        price_per_1k_tokens: per_1k_tokens(&s.latest, fees),
        versions: s.versions,
        usage: usage(&s.usage),
    }
}
