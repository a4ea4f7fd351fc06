use std::time::{SystemTime, UNIX_EPOCH};

use rand::RngCore;

/// Unix time in milliseconds, the one clock every record and event is stamped with (0 if the
/// system clock is set before 1970).
pub fn unix_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// [`unix_ms`] as an unsigned count, for protocol fields that are `u64` (signed-message
/// timestamps, receipt times, heartbeats).
pub fn unix_ms_u64() -> u64 {
    u64::try_from(unix_ms()).unwrap_or(0)
}

/// A fresh id of `bytes` bytes (at least 6) as lowercase hex: the unix time in milliseconds in
/// the first 6 bytes (big-endian), random bytes after it.
///
/// Ids made this way sort by when they were made, so a database index on them grows at its
/// right edge, a few hot pages, where fully random ids put every insert on a random leaf (a
/// page written to the WAL per row, and half-empty pages). The random tail (80 bits in a
/// 16-byte id) keeps ids unique without coordination between gateways, and unguessable.
pub fn time_ordered_id(bytes: usize) -> String {
    let mut b = vec![0u8; bytes.max(6)];
    let ms = unix_ms_u64().to_be_bytes();
    b[..6].copy_from_slice(&ms[2..]);
    rand::thread_rng().fill_bytes(&mut b[6..]);
    hex::encode(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_ordered_ids_lead_with_the_clock_and_differ() {
        let before = unix_ms_u64();
        let a = time_ordered_id(16);
        let b = time_ordered_id(16);
        let after = unix_ms_u64();
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
        let stamp = u64::from_str_radix(&a[..12], 16).unwrap();
        assert!((before..=after).contains(&stamp), "{stamp} not in {before}..={after}");
        // Ids of later milliseconds sort after earlier ones.
        let later = format!("{:012x}", after + 1);
        assert!(a[..12] < *later && b[..12] < *later);
        assert_eq!(time_ordered_id(32).len(), 64);
    }
}
