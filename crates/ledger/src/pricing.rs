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
    /// Operator compute fee per 1,000 tokens (prompt + completion) of a language-model call,
    /// which pays this instead of `operator_fee`.
    #[serde(default)]
    pub operator_fee_per_1k_tokens: u128,
    /// Verification fee per 1,000 tokens of a language-model call in `sampled` mode.
    #[serde(default)]
    pub sampled_fee_per_1k_tokens: u128,
    /// Verification fee per 1,000 tokens of a language-model call in `quorum` mode.
    #[serde(default)]
    pub quorum_fee_per_1k_tokens: u128,
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
        self.assemble(royalty, self.operator_fee, verification, markup, payees)
    }

    /// Prices a language-model call of `tokens` tokens (prompt + completion) whose creator
    /// royalty for them is `royalty` ([`verinet_primitives::wire::TokenPrices::royalty`]): the
    /// node's fees per 1,000 tokens (rounded up), the protocol's bps, the app's markup per
    /// call. Every part grows with `tokens`, so the quote of what a call used never exceeds
    /// the quote of its maximum, part by part.
    pub fn quote_tokens(&self, royalty: u128, tokens: u64, mode: VerificationMode, markup: u128, payees: Payees) -> Quote {
        let per_1k = |fee: u128| verinet_primitives::wire::per_1k(u128::from(tokens).saturating_mul(fee));
        let verification = match mode {
            VerificationMode::None => 0,
            VerificationMode::Sampled => per_1k(self.sampled_fee_per_1k_tokens),
            VerificationMode::Quorum => per_1k(self.quorum_fee_per_1k_tokens),
        };
        self.assemble(royalty, per_1k(self.operator_fee_per_1k_tokens), verification, markup, payees)
    }

    fn assemble(&self, royalty: u128, compute: u128, verification: u128, markup: u128, payees: Payees) -> Quote {
        let base = royalty.saturating_add(compute).saturating_add(verification);
        // bps <= 10_000 in practice; u128 math cannot overflow below 2^114 base.
        let protocol = base.checked_mul(u128::from(self.protocol_fee_bps)).map_or(u128::MAX, |x| x / 10_000);
        let markup = if payees.app.is_some() { markup } else { 0 };
        let total = base.saturating_add(protocol).saturating_add(markup);
        Quote { royalty, compute, verification, protocol, markup, total, payees }
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
        let fees = FeeSchedule { operator_fee: 300, sampled_fee: 50, quorum_fee: 500, protocol_fee_bps: 250, ..FeeSchedule::default() };
        let q = fees.quote(1_000, VerificationMode::Sampled, 7, payees(true));
        // 2.5% of 1000 + 300 + 50 = 33.75 -> 33
        assert_eq!((q.verification, q.protocol, q.markup), (50, 33, 7));
        assert_eq!(q.total, 1_000 + 300 + 50 + 33 + 7);
        let split = q.split();
        assert_eq!(split.iter().map(|(_, _, a)| a).sum::<u128>(), q.total);
        assert!(split.contains(&(Address::repeat_byte(4), Role::App, 7)));
    }

    #[test]
    fn token_quotes_round_up_per_1k_and_never_exceed_the_maximum_part_by_part() {
        use verinet_primitives::wire::TokenPrices;
        let fees = FeeSchedule {
            operator_fee: 999,
            operator_fee_per_1k_tokens: 2_000,
            sampled_fee_per_1k_tokens: 500,
            protocol_fee_bps: 1_000,
            ..FeeSchedule::default()
        };
        let prices = TokenPrices { prompt_per_1k: 3_000, completion_per_1k: 7_001 };
        let at = |prompt: u64, completion: u64| {
            fees.quote_tokens(prices.royalty(prompt, completion), prompt + completion, VerificationMode::Sampled, 5, payees(true))
        };
        let q = at(10, 3);
        // royalty ceil((30000 + 21003) / 1000) = 52; compute ceil(26000/1000) = 26;
        // verification ceil(6500/1000) = 7; protocol 10% of 85 = 8; markup 5 per call.
        assert_eq!((q.royalty, q.compute, q.verification, q.protocol, q.markup), (52, 26, 7, 8, 5));
        assert_eq!(q.total, 52 + 26 + 7 + 8 + 5);
        let max = at(10, 64);
        for used in 0..=64 {
            let u = at(10, used);
            assert!(u.royalty <= max.royalty && u.compute <= max.compute && u.verification <= max.verification);
            assert!(u.protocol <= max.protocol && u.total <= max.total, "{used}");
        }
        assert_eq!(at(0, 0).total, 5, "no tokens, only the app's markup");
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
