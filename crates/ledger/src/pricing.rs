use serde::{Deserialize, Serialize};
use verinet_primitives::{Address, wire::VerificationMode};
use verinet_store::Role;

/// What a node charges on top of the creator's royalty. From the node's `[payments]` config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeeSchedule {
    /// Operator compute fee per call, base units.
    pub operator_fee: u128,
    /// Verification fee per call in `sampled` mode (pays the re-executing validators).
    pub sampled_fee: u128,
    /// Verification fee per call in `quorum` mode.
    pub quorum_fee: u128,
    /// Protocol fee in basis points of royalty + compute + verification, rounded down.
    pub protocol_fee_bps: u32,
}

/// Who receives each part of a price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payees {
    /// The model's owner.
    pub creator: Address,
    /// The node operator serving the call.
    pub operator: Address,
    /// The protocol treasury (also holds verification fees until validators are paid directly).
    pub protocol: Address,
    /// The app's owner, when the request names an app.
    pub app: Option<Address>,
}

/// The price of one call, part by part, and whom each part pays. Stored with the escrow so the
/// capture splits exactly what was quoted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// Creator royalty (set at publish).
    #[serde(with = "amount")]
    pub royalty: u128,
    /// Operator compute fee.
    #[serde(with = "amount")]
    pub compute: u128,
    /// Verification fee (zero for `none`).
    #[serde(with = "amount")]
    pub verification: u128,
    /// Protocol fee.
    #[serde(with = "amount")]
    pub protocol: u128,
    /// App markup.
    #[serde(with = "amount")]
    pub markup: u128,
    /// What the caller pays: the sum of the above.
    #[serde(with = "amount")]
    pub total: u128,
    /// Recipients.
    pub payees: Payees,
}

impl FeeSchedule {
    /// Prices one call of a model with `royalty`, in `mode`, optionally through an app with
    /// `markup`. Saturates instead of overflowing (a price near 2^128 is refused later anyway).
    pub fn quote(&self, royalty: u128, mode: VerificationMode, markup: u128, payees: Payees) -> Quote {
        let verification = match mode {
            VerificationMode::None => 0,
            VerificationMode::Sampled => self.sampled_fee,
            VerificationMode::Quorum => self.quorum_fee,
        };
        let base = royalty.saturating_add(self.operator_fee).saturating_add(verification);
        // bps <= 10_000 in practice; u128 math cannot overflow below 2^114 base.
        let protocol = base.checked_mul(u128::from(self.protocol_fee_bps)).map_or(u128::MAX, |x| x / 10_000);
        let markup = if payees.app.is_some() { markup } else { 0 };
        let total = base.saturating_add(protocol).saturating_add(markup);
        Quote { royalty, compute: self.operator_fee, verification, protocol, markup, total, payees }
    }
}

impl Quote {
    /// The capture's credits: (payee, role, amount), zero parts left out. Sums to `total`.
    pub fn split(&self) -> Vec<(Address, Role, u128)> {
        let p = &self.payees;
        let mut out = vec![
            (p.creator, Role::Creator, self.royalty),
            (p.operator, Role::Operator, self.compute),
            (p.protocol, Role::Validator, self.verification),
            (p.protocol, Role::Protocol, self.protocol),
        ];
        if let Some(app) = p.app {
            out.push((app, Role::App, self.markup));
        }
        out.retain(|(_, _, a)| *a > 0);
        out
    }
}

/// Amounts as decimal strings in JSON (u128 does not fit a JSON number everywhere).
pub(crate) mod amount {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &u128, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&v.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u128, D::Error> {
        String::deserialize(d)?.parse().map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payees(app: bool) -> Payees {
        Payees {
            creator: Address::repeat_byte(1),
            operator: Address::repeat_byte(2),
            protocol: Address::repeat_byte(3),
            app: app.then(|| Address::repeat_byte(4)),
        }
    }

    #[test]
    fn parts_add_up_and_split_pays_each_role() {
        let fees = FeeSchedule { operator_fee: 300, sampled_fee: 50, quorum_fee: 500, protocol_fee_bps: 250 };
        let q = fees.quote(1_000, VerificationMode::Sampled, 7, payees(true));
        // 2.5% of 1000 + 300 + 50 = 33.75 -> 33
        assert_eq!((q.verification, q.protocol, q.markup), (50, 33, 7));
        assert_eq!(q.total, 1_000 + 300 + 50 + 33 + 7);
        let split = q.split();
        assert_eq!(split.iter().map(|(_, _, a)| a).sum::<u128>(), q.total);
        assert!(split.contains(&(Address::repeat_byte(4), Role::App, 7)));
    }

    #[test]
    fn no_app_no_markup_and_free_models_cost_only_fees() {
        let fees = FeeSchedule { operator_fee: 10, ..FeeSchedule::default() };
        let q = fees.quote(0, VerificationMode::None, 99, payees(false));
        assert_eq!((q.markup, q.total), (0, 10));
        assert_eq!(q.split(), vec![(Address::repeat_byte(2), Role::Operator, 10)]);
        let json = serde_json::to_string(&q).unwrap();
        assert!(json.contains("\"total\":\"10\""), "{json}");
        assert_eq!(serde_json::from_str::<Quote>(&json).unwrap(), q);
    }
}
