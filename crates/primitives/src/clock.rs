use std::time::{SystemTime, UNIX_EPOCH};

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
