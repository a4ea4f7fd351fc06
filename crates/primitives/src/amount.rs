//! Amounts as a person reads and types them: `1.5` tokens rather than 1500000000000000000
//! base units. The ledger, the API and every signature keep base units; these two functions
//! are the only conversion, used where a person is on the other side (the CLI, docs, the
//! `extra` of a 402).

use crate::{Error, Result};

/// Decimals of the ledger's token: one token is 10^18 base units.
pub const TOKEN_DECIMALS: u32 = 18;

/// Base units as a decimal number of tokens, without trailing zeros: `1500000000000000000`
/// -> `1.5`, `1000` -> `0.000000000000001`, `0` -> `0`.
pub fn format_amount(base_units: u128, decimals: u32) -> String {
    let scale = 10u128.pow(decimals);
    let (whole, frac) = (base_units / scale, base_units % scale);
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:0width$}", width = decimals as usize);
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// A number of tokens (`1.5`, `0.001`, `2`) as base units. Refuses signs, exponents, more
/// fractional digits than the token has, and amounts past `u128`.
pub fn parse_amount(text: &str, decimals: u32) -> Result<u128> {
    let bad = |why: &str| Error::InvalidAmount(format!("{text:?}: {why}"));
    let t = text.trim();
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !digits(whole) || !digits(frac) {
        return Err(bad("not a decimal number of tokens (e.g. 1.5 or 0.001)"));
    }
    if frac.len() > decimals as usize {
        return Err(bad(&format!("more than {decimals} decimal places")));
    }
    let scale = 10u128.pow(decimals);
    let whole: u128 = if whole.is_empty() { 0 } else { whole.parse().map_err(|_| bad("too large"))? };
    let frac_units: u128 = if frac.is_empty() { 0 } else { format!("{frac:0<width$}", width = decimals as usize).parse().map_err(|_| bad("too large"))? };
    whole.checked_mul(scale).and_then(|w| w.checked_add(frac_units)).ok_or_else(|| bad("too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses_both_ways() {
        for (units, text) in [
            (0u128, "0"),
            (1, "0.000000000000000001"),
            (1_000, "0.000000000000001"),
            (1_000_000_000_000_000, "0.001"),
            (1_500_000_000_000_000_000, "1.5"),
            (1_000_000_000_000_000_000_000, "1000"),
        ] {
            assert_eq!(format_amount(units, TOKEN_DECIMALS), text);
            assert_eq!(parse_amount(text, TOKEN_DECIMALS).unwrap(), units);
        }
        assert_eq!(parse_amount(".5", 18).unwrap(), 500_000_000_000_000_000);
        assert_eq!(parse_amount("2.", 18).unwrap(), 2_000_000_000_000_000_000);
        assert_eq!(parse_amount("1.5", 6).unwrap(), 1_500_000);
        for bad in ["", ".", "-1", "1e3", "1.2.3", "0.0000000000000000001", "abc", "1 000", "999999999999999999999999999999999"] {
            assert!(parse_amount(bad, 18).is_err(), "accepted {bad:?}");
        }
    }
}
