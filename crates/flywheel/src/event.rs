use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use verinet_primitives::Address;

/// Something that happened, as the flywheel counts it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Event {
    /// One `POST /v1/infer`, whatever its outcome.
    Request(Box<RequestEvent>),
    /// A model version was published.
    Publish {
        /// Model name.
        model: String,
        /// Owner.
        owner: Address,
    },
    /// An executor joined (started serving).
    NodeJoin {
        /// Its address.
        node: Address,
        /// `worker` or `validator`.
        role: String,
    },
}

impl Event {
    /// The stored kind.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::Request(_) => "request",
            Event::Publish { .. } => "publish",
            Event::NodeJoin { .. } => "node_join",
        }
    }
}

/// One request and how each layer handled it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RequestEvent {
    /// Model name, once resolved.
    pub model: Option<String>,
    /// App id, if tagged.
    pub app: Option<String>,
    /// Who paid (or tried to).
    pub payer: Option<Address>,
    /// Verification mode.
    pub mode: String,
    /// HTTP status answered.
    pub status: u16,
    /// Error code, when not 200.
    pub error: Option<String>,
    /// Price quoted, base units.
    #[serde(with = "amount")]
    pub price: u128,
    /// What was captured (0 when free, refunded or refused).
    #[serde(with = "amount")]
    pub charged: u128,
    /// A payment was attached (x402 or session).
    pub payment_attempted: bool,
    /// The captured split: role -> amount.
    #[serde(with = "amounts")]
    pub earnings: BTreeMap<String, u128>,
    /// The executor whose result was returned.
    pub executor: Option<Address>,
    /// `unchecked`, `passed`, `disputed`, `quorum`.
    pub check: Option<String>,
    /// Workers refuted.
    pub disputed: Vec<Address>,
    /// Waiting for an execution slot, ms.
    pub queue_ms: f64,
    /// Whole request, ms.
    pub total_ms: f64,
    /// Language models: prompt (or embedding input) tokens.
    #[serde(default)]
    pub prompt_tokens: u64,
    /// Language models: tokens generated.
    #[serde(default)]
    pub completion_tokens: u64,
}

// Amounts as decimal strings: u128 does not fit a JSON number everywhere, and serde's
// internally tagged enums cannot buffer 128-bit integers at all.
pub(crate) mod amount {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

pub(crate) mod amounts {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &BTreeMap<String, u128>, s: S) -> Result<S::Ok, S::Error> {
        v.iter().map(|(k, a)| (k.clone(), a.to_string())).collect::<BTreeMap<_, _>>().serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, u128>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, a)| Ok((k, a.parse().map_err(D::Error::custom)?)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_round_trip_through_json() {
        let e = Event::Request(Box::new(RequestEvent {
            price: u128::MAX,
            charged: 7,
            earnings: BTreeMap::from([("operator".to_string(), 1u128 << 100)]),
            ..Default::default()
        }));
        let back: Event = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
        assert_eq!(back, e);
    }
}
