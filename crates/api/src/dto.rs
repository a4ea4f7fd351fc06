//! Storage records -> wire bodies.

use verinet_primitives::wire::{ModelInfo, ModelListItem, ModelVersionInfo, PriceInfo, UsageInfo};
use verinet_store::{ModelSummary, ModelVersion, Usage};

/// The price of one call. Fees join the royalty when payments land; today it is the royalty.
pub(crate) fn price_of(v: &ModelVersion) -> PriceInfo {
    PriceInfo { royalty: v.price.to_string(), total: v.price.to_string() }
}

pub(crate) fn usage(u: &Usage) -> UsageInfo {
    UsageInfo { calls: u.calls, failures: u.failures, last_called_at_ms: u.last_called_at_ms }
}

pub(crate) fn version_info(v: &ModelVersion) -> ModelVersionInfo {
    ModelVersionInfo {
        name: v.name.clone(),
        version: v.version.clone(),
        sha256: v.id,
        size: v.size,
        owner: v.owner,
        description: v.description.clone(),
        tags: v.tags.clone(),
        license: v.license.clone(),
        price: price_of(v),
        io: v.signature.clone(),
        published_at_ms: v.published_at_ms,
        usage: usage(&v.usage),
    }
}

pub(crate) fn model_info(versions: &[ModelVersion]) -> Option<ModelInfo> {
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
        latest: version_info(latest),
        versions: versions.iter().map(|v| v.version.clone()).collect(),
        usage: total,
    })
}

pub(crate) fn list_item(s: &ModelSummary) -> ModelListItem {
    ModelListItem {
        name: s.name.clone(),
        owner: s.owner,
        latest_version: s.latest.version.clone(),
        sha256: s.latest.id,
        description: s.latest.description.clone(),
        tags: s.latest.tags.clone(),
        price: price_of(&s.latest).total,
        versions: s.versions,
        usage: usage(&s.usage),
    }
}
