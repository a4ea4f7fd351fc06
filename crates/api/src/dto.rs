//! Storage records -> wire bodies.

use verinet_ledger::{FeeSchedule, Payees};
use verinet_primitives::wire::{ModelInfo, ModelListItem, ModelVersionInfo, PriceInfo, UsageInfo, VerificationMode};
use verinet_store::{ModelSummary, ModelVersion, Usage};

/// The price of one call in mode `none` without an app (what a listing shows; every 402
/// quotes the exact price of the request at hand).
pub(crate) fn price_of(v: &ModelVersion, fees: &FeeSchedule) -> PriceInfo {
    let nobody = Payees { creator: v.owner, operator: v.owner, protocol: v.owner, app: None };
    let q = fees.quote(v.price, VerificationMode::None, 0, nobody);
    PriceInfo {
        royalty: q.royalty.to_string(),
        operator_fee: q.compute.to_string(),
        protocol_fee: q.protocol.to_string(),
        total: q.total.to_string(),
    }
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
        versions: s.versions,
        usage: usage(&s.usage),
    }
}
