//! Signed messages between gateways and workers, both ways.
//!
//! Every request and every answer on the internal protocol carries three headers:
//! `x-verinet-address` (who signs), `x-verinet-timestamp` (unix ms) and `x-verinet-signature`,
//! an EIP-191 `personal_sign` over the keccak256 of
//!
//! ```text
//! verinet-net/1\n{METHOD}\n{path}\n{timestamp}\n{0x-hex keccak256(body)}
//! ```
//!
//! An answer is signed with method `RESPONSE` and the request's path, so it cannot be replayed
//! as a request, nor as the answer to another path. A receiver recovers the signer, checks it
//! is the claimed address (and one it trusts) and that the timestamp is within its skew.
//!
//! A job (gateway to worker) also names its worker: header `x-verinet-to`, signed as a line
//! `to 0x…` after the path, so a job relayed to another worker fails there. Workers remember
//! the hash of every job they took for the skew window and refuse it a second time.

use alloy_primitives::{Address, B256, Signature, keccak256};
use alloy_signer::SignerSync;
use alloy_signer_local::PrivateKeySigner;
use http::{HeaderMap, HeaderValue};

/// Who signs.
pub const ADDRESS: &str = "x-verinet-address";
/// When, unix ms.
pub const TIMESTAMP: &str = "x-verinet-timestamp";
/// The EIP-191 signature, `0x` hex (65 bytes).
pub const SIGNATURE: &str = "x-verinet-signature";
/// The method an answer is signed under.
pub const RESPONSE: &str = "RESPONSE";
/// Whom a job is for (its worker's address).
pub const TO: &str = "x-verinet-to";

/// Why a message is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// A header is absent or unreadable.
    #[error("missing or malformed {0} header")]
    Header(&'static str),
    /// The signature does not recover the claimed address.
    #[error("signature does not match {claimed}")]
    BadSignature {
        /// The address in the header.
        claimed: Address,
    },
    /// Signed for another recipient (a job relayed to another worker).
    #[error("signed for {to}, not for {me}")]
    WrongRecipient {
        /// The recipient the message names.
        to: Address,
        /// Who received it.
        me: Address,
    },
    /// Too old or from the future.
    #[error("timestamp {ts} is more than {skew_ms} ms from now")]
    Stale {
        /// The timestamp given.
        ts: u64,
        /// The allowed skew.
        skew_ms: u64,
    },
}

/// The hash that is signed.
pub fn message_hash(method: &str, path: &str, timestamp: u64, body: &[u8]) -> B256 {
    message_hash_to(method, path, None, timestamp, body)
}

/// The hash that is signed, for a message addressed `to` one recipient (a job).
pub fn message_hash_to(method: &str, path: &str, to: Option<Address>, timestamp: u64, body: &[u8]) -> B256 {
    let to = to.map(|a| format!("to {a:#x}\n")).unwrap_or_default();
    keccak256(format!("verinet-net/1\n{method}\n{path}\n{to}{timestamp}\n{:#x}", keccak256(body)))
}

/// The three headers that sign `body` sent as `method path` by `key`, now.
pub fn sign(key: &PrivateKeySigner, method: &str, path: &str, body: &[u8]) -> HeaderMap {
    sign_at(key, method, path, body, verinet_primitives::unix_ms_u64())
}

/// [`sign`] at a given time (tests of staleness).
pub fn sign_at(key: &PrivateKeySigner, method: &str, path: &str, body: &[u8], timestamp: u64) -> HeaderMap {
    sign_full(key, method, path, None, body, timestamp)
}

/// The headers that sign a job for the worker at `to`, now.
pub fn sign_to(key: &PrivateKeySigner, method: &str, path: &str, to: Address, body: &[u8]) -> HeaderMap {
    sign_full(key, method, path, Some(to), body, verinet_primitives::unix_ms_u64())
}

fn sign_full(key: &PrivateKeySigner, method: &str, path: &str, to: Option<Address>, body: &[u8], timestamp: u64) -> HeaderMap {
    let hash = message_hash_to(method, path, to, timestamp, body);
    let mut h = HeaderMap::new();
    // Signing a 32-byte message with an in-memory key cannot fail; an empty signature would be
    // refused by the receiver anyway.
    let sig = key.sign_message_sync(hash.as_slice()).map(|s| format!("0x{}", hex::encode(s.as_bytes()))).unwrap_or_default();
    for (name, value) in [(ADDRESS, key.address().to_checksum(None)), (TIMESTAMP, timestamp.to_string()), (SIGNATURE, sig)] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    if let Some(v) = to.and_then(|a| HeaderValue::from_str(&a.to_checksum(None)).ok()) {
        h.insert(TO, v);
    }
    h
}

/// POSTs `json` to `base` + `path`, signed by `key`; the answer's status, headers and body,
/// whatever the status (callers judge it, and check the answer's signature with [`verify`]).
pub async fn post_signed(
    http: &reqwest::Client,
    key: &PrivateKeySigner,
    base: &str,
    path: &str,
    to: Option<Address>,
    json: Vec<u8>,
) -> Result<(http::StatusCode, HeaderMap, bytes::Bytes), reqwest::Error> {
    let mut headers = sign_full(key, "POST", path, to, &json, verinet_primitives::unix_ms_u64());
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let resp = http.post(format!("{}{path}", base.trim_end_matches('/'))).headers(headers).body(json).send().await?;
    let (status, headers) = (resp.status(), resp.headers().clone());
    Ok((status, headers, resp.bytes().await?))
}

/// Sends `json` to `base + path` signed by `key` for the worker at `to` and returns the
/// response unread (for a streamed answer).
pub async fn send_signed(
    http: &reqwest::Client,
    key: &PrivateKeySigner,
    base: &str,
    path: &str,
    to: Address,
    json: Vec<u8>,
) -> Result<reqwest::Response, reqwest::Error> {
    let mut headers = sign_to(key, "POST", path, to, &json);
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    http.post(format!("{}{path}", base.trim_end_matches('/'))).headers(headers).body(json).send().await
}

/// A `200` JSON answer to a request for `path`, signed by `key` (method [`RESPONSE`]).
pub fn signed_answer(key: &PrivateKeySigner, path: &str, json: Vec<u8>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let mut headers = sign(key, RESPONSE, path, &json);
    headers.insert(http::header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    (headers, json).into_response()
}

/// The signer of `body` sent as `method path`, if the headers prove it within `skew_ms` of now.
pub fn verify(headers: &HeaderMap, method: &str, path: &str, body: &[u8], skew_ms: u64) -> Result<Address, AuthError> {
    verify_full(headers, method, path, None, body, skew_ms).map(|(a, _)| a)
}

/// The signer of a job for `me`, and the signed hash (what a worker remembers to take it once):
/// the job must name `me` as its recipient.
pub fn verify_to(headers: &HeaderMap, method: &str, path: &str, me: Address, body: &[u8], skew_ms: u64) -> Result<(Address, B256), AuthError> {
    let to: Address = headers
        .get(TO)
        .and_then(|v| v.to_str().ok())
        .ok_or(AuthError::Header(TO))?
        .parse()
        .map_err(|_| AuthError::Header(TO))?;
    if to != me {
        return Err(AuthError::WrongRecipient { to, me });
    }
    verify_full(headers, method, path, Some(me), body, skew_ms)
}

fn verify_full(headers: &HeaderMap, method: &str, path: &str, to: Option<Address>, body: &[u8], skew_ms: u64) -> Result<(Address, B256), AuthError> {
    let get = |name: &'static str| headers.get(name).and_then(|v| v.to_str().ok()).ok_or(AuthError::Header(name));
    let claimed: Address = get(ADDRESS)?.parse().map_err(|_| AuthError::Header(ADDRESS))?;
    let ts: u64 = get(TIMESTAMP)?.parse().map_err(|_| AuthError::Header(TIMESTAMP))?;
    let sig_hex = get(SIGNATURE)?;
    let raw = hex::decode(sig_hex.strip_prefix("0x").unwrap_or(sig_hex)).map_err(|_| AuthError::Header(SIGNATURE))?;
    let sig = Signature::try_from(raw.as_slice()).map_err(|_| AuthError::Header(SIGNATURE))?;
    if verinet_primitives::unix_ms_u64().abs_diff(ts) > skew_ms {
        return Err(AuthError::Stale { ts, skew_ms });
    }
    let hash = message_hash_to(method, path, to, ts, body);
    match sig.recover_address_from_msg(hash.as_slice()) {
        Ok(a) if a == claimed => Ok((a, hash)),
        _ => Err(AuthError::BadSignature { claimed }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SKEW: u64 = 30_000;

    #[test]
    fn a_signed_message_verifies_and_every_tampering_is_refused() {
        let key = PrivateKeySigner::random();
        let h = sign(&key, "POST", "/worker/v1/run", b"{\"a\":1}");
        assert_eq!(verify(&h, "POST", "/worker/v1/run", b"{\"a\":1}", SKEW), Ok(key.address()));

        let bad = |e: Result<Address, AuthError>| assert!(matches!(e, Err(AuthError::BadSignature { .. })), "{e:?}");
        bad(verify(&h, "POST", "/worker/v1/run", b"{\"a\":2}", SKEW));
        bad(verify(&h, "POST", "/worker/v1/other", b"{\"a\":1}", SKEW));
        bad(verify(&h, RESPONSE, "/worker/v1/run", b"{\"a\":1}", SKEW));

        // Someone else's address in front of this signature.
        let mut other = h.clone();
        other.insert(ADDRESS, HeaderValue::from_str(&PrivateKeySigner::random().address().to_string()).unwrap());
        bad(verify(&other, "POST", "/worker/v1/run", b"{\"a\":1}", SKEW));

        let mut none = h.clone();
        none.remove(SIGNATURE);
        assert_eq!(verify(&none, "POST", "/worker/v1/run", b"{\"a\":1}", SKEW), Err(AuthError::Header(SIGNATURE)));
    }

    #[test]
    fn a_job_names_its_worker() {
        let (gw, me, other) = (PrivateKeySigner::random(), PrivateKeySigner::random().address(), PrivateKeySigner::random().address());
        let h = sign_to(&gw, "POST", "/worker/v1/run", me, b"{}");
        let (signer, hash) = verify_to(&h, "POST", "/worker/v1/run", me, b"{}", SKEW).unwrap();
        assert_eq!(signer, gw.address());
        assert_ne!(hash, message_hash("POST", "/worker/v1/run", 0, b"{}"));
        assert_eq!(verify_to(&h, "POST", "/worker/v1/run", other, b"{}", SKEW), Err(AuthError::WrongRecipient { to: me, me: other }));
        // The recipient is signed: naming another one in the header breaks the signature.
        let mut moved = h.clone();
        moved.insert(TO, HeaderValue::from_str(&other.to_string()).unwrap());
        assert!(matches!(verify_to(&moved, "POST", "/worker/v1/run", other, b"{}", SKEW), Err(AuthError::BadSignature { .. })));
        // An unaddressed message is no job.
        let plain = sign(&gw, "POST", "/worker/v1/run", b"{}");
        assert_eq!(verify_to(&plain, "POST", "/worker/v1/run", me, b"{}", SKEW), Err(AuthError::Header(TO)));
    }

    #[test]
    fn old_and_future_messages_are_refused() {
        let key = PrivateKeySigner::random();
        let old = sign_at(&key, "POST", "/p", b"", verinet_primitives::unix_ms_u64() - 60_000);
        assert!(matches!(verify(&old, "POST", "/p", b"", SKEW), Err(AuthError::Stale { .. })));
        let future = sign_at(&key, "POST", "/p", b"", verinet_primitives::unix_ms_u64() + 60_000);
        assert!(matches!(verify(&future, "POST", "/p", b"", SKEW), Err(AuthError::Stale { .. })));
    }

    #[test]
    fn the_signed_hash_is_an_eip191_message_any_wallet_recovers() {
        // The digest personal_sign signs: keccak256("\x19Ethereum Signed Message:\n32" ++ hash).
        let key = PrivateKeySigner::random();
        let h = sign_at(&key, "GET", "/x", b"", 1_700_000_000_000);
        let hash = message_hash("GET", "/x", 1_700_000_000_000, b"");
        let mut prefixed = b"\x19Ethereum Signed Message:\n32".to_vec();
        prefixed.extend_from_slice(hash.as_slice());
        let digest = keccak256(&prefixed);
        let sig_hex = h.get(SIGNATURE).unwrap().to_str().unwrap();
        let sig = Signature::try_from(hex::decode(&sig_hex[2..]).unwrap().as_slice()).unwrap();
        assert_eq!(sig.recover_address_from_prehash(&digest).unwrap(), key.address());
    }
}
