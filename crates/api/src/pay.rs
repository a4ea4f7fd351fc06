//! The payment step of `POST /v1/infer`: price a call, and turn what the client attached (an
//! x402 `PAYMENT-SIGNATURE` / legacy `X-PAYMENT`, or a session bearer token) into an escrow.

use axum::http::{HeaderMap, header};
use verinet_ledger::{Escrow, EscrowRequest, PaidBy, Payees, Quote};
use verinet_payments::{
    PaymentError, from_ledger_error, token_hash, unix_now,
    wire::{AnyPayment, PAYMENT_SIGNATURE, PaymentRequired, X_PAYMENT, decode_payment},
};
use verinet_primitives::wire::VerificationMode;
use verinet_store::{App, ModelVersion};

use crate::{ApiError, AppState};

/// An escrow taken for a request, and how it was paid.
#[derive(Debug, Clone)]
pub(crate) struct Paid {
    /// The escrow.
    pub escrow: Escrow,
    /// `x402` or `session`.
    pub method: &'static str,
}

/// The price of one call of `model` in `mode`, through `app` if any.
/// `operator` is the worker that will execute (the primary one, for a quorum).
pub(crate) fn quote(
    st: &AppState,
    model: &ModelVersion,
    mode: VerificationMode,
    app: Option<&App>,
    operator: verinet_primitives::Address,
) -> Quote {
    let p = &st.payments;
    let payees = Payees { creator: model.owner, operator, protocol: p.protocol, app: app.map(|a| a.owner) };
    p.fees.quote(model.price, mode, app.map_or(0, |a| a.markup), payees)
}

/// The price of a language-model or embedding call of `prompt` prompt and `completion`
/// completion tokens: the model's per-token royalties (or, published without them, its price
/// per call) and the node's fees per 1,000 tokens; through `app`, its markup per call.
#[allow(clippy::too_many_arguments)]
pub(crate) fn token_quote(
    st: &AppState,
    model: &ModelVersion,
    mode: VerificationMode,
    app: Option<&App>,
    operator: verinet_primitives::Address,
    prompt: u64,
    completion: u64,
) -> Quote {
    let p = &st.payments;
    let payees = Payees { creator: model.owner, operator, protocol: p.protocol, app: app.map(|a| a.owner) };
    requote(st, model, mode, app.map_or(0, |a| a.markup), payees, prompt, completion)
}

/// [`token_quote`] for other token counts with the payees and markup of `of`: what a call
/// escrowed at its maximum actually used.
pub(crate) fn used_quote(st: &AppState, model: &ModelVersion, mode: VerificationMode, of: &Quote, prompt: u64, completion: u64) -> Quote {
    requote(st, model, mode, of.markup, of.payees, prompt, completion)
}

fn requote(st: &AppState, model: &ModelVersion, mode: VerificationMode, markup: u128, payees: Payees, prompt: u64, completion: u64) -> Quote {
    let royalty = model.token_prices.map_or(model.price, |t| t.royalty(prompt, completion));
    st.payments.fees.quote_tokens(royalty, prompt.saturating_add(completion), mode, markup, payees)
}

/// What a route's 402 offers: its resource path, and whether `upto` comes first (calls whose
/// price is only known at the end: an authorised maximum, of which the capture takes what
/// was used). `exact` is always offered, for the maximum too; either way the rest of the
/// maximum goes back to the payer's balance.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Offer {
    /// The route, for the x402 resource URL.
    pub path: &'static str,
    /// Offer `upto` (Permit2) before `exact`.
    pub upto: bool,
}

/// `/v1/infer`: a price known before the call, `exact`.
pub(crate) const INFER: Offer = Offer { path: "/v1/infer", upto: false };

/// The `PAYMENT-REQUIRED` body of `offer` for `amount`.
pub(crate) fn payment_required(st: &AppState, amount: u128, headers: &HeaderMap, offer: Offer, error: Option<&PaymentError>) -> PaymentRequired {
    let x402 = &st.payments.x402;
    let mut required = x402.payment_required(amount, &resource_url(headers, offer.path), error);
    if offer.upto {
        required.accepts.insert(0, x402.upto_requirements(amount, st.payments.gateway));
    }
    required
}

/// Takes payment for `quote` (the maximum, for a call priced by what it uses): `None` when
/// the call is free, else the escrow. An x402 payment may be `exact` or `upto` on any route.
/// Refusals carry the requirements for a fresh 402.
#[allow(clippy::too_many_arguments)]
pub(crate) async fn take(
    st: &AppState,
    headers: &HeaderMap,
    quote: &Quote,
    offer: Offer,
    model: &ModelVersion,
    app: Option<&str>,
    request_id: &str,
    input_hash: &str,
    payer_seen: &mut Option<verinet_primitives::Address>,
) -> Result<Option<Paid>, ApiError> {
    if quote.total == 0 {
        return Ok(None);
    }
    let refuse = |e: PaymentError| ApiError::payment_for(e, st, quote.total, headers, offer);
    let model_id = model.id.to_string();

    let x402 = headers.get(PAYMENT_SIGNATURE).or_else(|| headers.get(X_PAYMENT));
    let (payer, paid_by, method) = if let Some(value) = x402 {
        let value = value.to_str().map_err(|_| refuse(PaymentError::Malformed("header is not ASCII".into())))?;
        let terms = &st.payments.x402;
        let ok = match decode_payment(value).map_err(|e| refuse(PaymentError::Malformed(e)))? {
            AnyPayment::Exact(payload) => terms.verify(&payload, &terms.requirements(quote.total), unix_now()),
            AnyPayment::Upto(payload) => {
                terms.verify_upto(&payload, &terms.upto_requirements(quote.total, st.payments.gateway), unix_now())
            }
        }
        .map_err(refuse)?;
        (ok.payer, PaidBy::Authorization { nonce: ok.nonce }, "x402")
    } else if let Some(token) = bearer(headers) {
        let session = st
            .ledger
            .session(&token_hash(token))
            .await?
            .ok_or_else(|| refuse(PaymentError::SessionInvalid("unknown bearer token".into())))?;
        if !session.models.is_empty()
            && !session.models.iter().any(|m| *m == model.name || *m == model_id)
        {
            return Err(refuse(PaymentError::BudgetExceeded(format!(
                "the session does not cover model {}",
                model.name
            ))));
        }
        (session.payer, PaidBy::Session { id: session.id.clone() }, "session")
    } else {
        return Err(refuse(PaymentError::Required { amount: quote.total }));
    };
    // Proven (a valid signature or a known session), so a refusal from here on is a user who
    // tried to pay.
    *payer_seen = Some(payer);
    // The authorization's nonce, to find what it paid for if it was used before.
    let reference = match &paid_by {
        PaidBy::Authorization { nonce } => Some(nonce.to_lowercase()),
        PaidBy::Session { .. } => None,
    };
    let request = EscrowRequest {
        request_id,
        payer,
        quote,
        model: &model_id,
        app,
        gateway: st.payments.gateway,
        input_hash,
        paid_by,
    };

    match st.ledger.escrow(request).await {
        Ok(escrow) => Ok(Some(Paid { escrow, method })),
        Err(e) => Err(match from_ledger_error(e) {
            Ok(PaymentError::NonceUsed(why)) => match reference {
                Some(nonce) => match paid_before(st, payer, &nonce, Some(input_hash), why).await {
                    Ok(Ok(answer)) => answer,
                    Ok(Err(refusal)) => refuse(refusal),
                    Err(e) => e,
                },
                None => refuse(PaymentError::NonceUsed(why)),
            },
            Ok(p) => refuse(p),
            Err(other) => other.into(),
        }),
    }
}

/// A spent authorization sent again: what it paid for. The same request (same inputs) answered
/// and captured gets its kept answer back (200, as first sent); one still running is asked to
/// retry in a moment (409 `payment_in_flight`); otherwise the refusal says what became of the
/// payment (refunded, answered to other inputs, answer past its retention window).
/// `input_hash` is the retry's (`None`: a lookup by payer and nonce, which states no inputs).
pub(crate) async fn paid_before(
    st: &AppState,
    payer: verinet_primitives::Address,
    nonce: &str,
    input_hash: Option<&str>,
    why: String,
) -> Result<Result<ApiError, PaymentError>, ApiError> {
    let used = |msg: String| Err(PaymentError::NonceUsed(msg));
    let Some((record, kept)) = st.ledger.store().payment_by_reference(payer, nonce).await? else {
        return Ok(used(why));
    };
    let id = &record.request_id;
    Ok(match record.status {
        verinet_store::PaymentStatus::Escrowed => Ok(ApiError::PaymentInFlight { request_id: id.clone() }),
        verinet_store::PaymentStatus::Refunded => used(format!(
            "this authorization paid request {id}, which was refunded ({}); sign a new one",
            record.reason.as_deref().unwrap_or("no reason recorded")
        )),
        verinet_store::PaymentStatus::Captured if input_hash.is_some_and(|h| h != record.input_hash) => {
            used(format!("this authorization already paid request {id}, for other inputs; sign a new one"))
        }
        verinet_store::PaymentStatus::Captured => match kept {
            Some(k) => {
                let summary = verinet_primitives::wire::PaymentSummary {
                    method: record.method.clone(),
                    payer,
                    amount: k.charged.to_string(),
                    escrow_tx: record.escrow_tx.clone(),
                    settle_tx: record.settle_tx.clone().unwrap_or_default(),
                };
                let mut headers = axum::http::HeaderMap::new();
                let mut carrier = axum::response::Response::default();
                settle_header(st, Some(&summary), &mut carrier);
                headers.extend(carrier.headers().iter().map(|(k, v)| (k.clone(), v.clone())));
                Ok(ApiError::AnsweredBefore(Box::new(crate::error::AnsweredBefore { request_id: id.clone(), body: k.answer, headers })))
            }
            None => used(format!(
                "this authorization paid request {id}, answered and charged; its answer was kept for {} s and is gone \
                 (the receipt stays: GET /v1/receipts/{id})",
                st.payments.answer_retention.as_secs()
            )),
        },
    })
}

/// Whether the request carries a payment (x402 header or bearer token).
pub(crate) fn attached(headers: &HeaderMap) -> bool {
    headers.contains_key(PAYMENT_SIGNATURE) || headers.contains_key(X_PAYMENT) || bearer(headers).is_some()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// `http://<host><path>`, the x402 resource URL.
pub(crate) fn resource_url(headers: &HeaderMap, path: &str) -> String {
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    format!("http://{host}{path}")
}

/// What an answer says about its payment: `Some` once the escrow was captured, with the amount
/// charged (`charged`, when less than the escrow: the rest was refunded).
pub(crate) fn summary(paid: Option<&Paid>, capture_tx: Option<&String>) -> Option<verinet_primitives::wire::PaymentSummary> {
    summary_charged(paid, capture_tx, paid.map_or(0, |p| p.escrow.quote.total))
}

/// [`summary`] of a capture of `charged`.
pub(crate) fn summary_charged(paid: Option<&Paid>, capture_tx: Option<&String>, charged: u128) -> Option<verinet_primitives::wire::PaymentSummary> {
    match (paid, capture_tx) {
        (Some(p), Some(tx)) => Some(verinet_primitives::wire::PaymentSummary {
            method: p.method.to_owned(),
            payer: p.escrow.payer,
            amount: charged.to_string(),
            escrow_tx: p.escrow.tx_id.clone(),
            settle_tx: tx.clone(),
        }),
        _ => None,
    }
}

/// Sets x402's `PAYMENT-RESPONSE` on an answer paid with x402.
pub(crate) fn settle_header(st: &AppState, summary: Option<&verinet_primitives::wire::PaymentSummary>, resp: &mut axum::response::Response) {
    use verinet_payments::wire::{PAYMENT_RESPONSE, SettleResponse, encode_header};
    let Some(p) = summary.filter(|p| p.method == "x402") else { return };
    let s = SettleResponse {
        success: true,
        transaction: p.settle_tx.clone(),
        network: st.payments.x402.network(),
        payer: Some(p.payer.to_checksum(None)),
        amount: Some(p.amount.clone()),
        error_reason: None,
        error_message: None,
    };
    if let Ok(v) = axum::http::HeaderValue::from_str(&encode_header(&s)) {
        resp.headers_mut().insert(PAYMENT_RESPONSE, v);
    }
}

/// Counts a captured `quote` in the request's usage event: what was charged and each role's
/// share.
pub(crate) fn record_charge(ev: &mut verinet_flywheel::RequestEvent, quote: &Quote) {
    ev.charged = quote.total;
    for (_, role, amount) in quote.split() {
        *ev.earnings.entry(role.to_string()).or_default() += amount;
    }
}

/// The receipt terms of a language-model request: its mode, what was escrowed, for whom.
pub(crate) fn language_terms(
    st: &AppState,
    request_id: &str,
    input_hash: alloy_primitives::B256,
    paid: Option<&Paid>,
    mode: VerificationMode,
) -> verinet_verify::Terms {
    verinet_verify::Terms {
        request_id: request_id.to_owned(),
        input_hash,
        mode: mode.as_str().into(),
        price: paid.map_or(0, |p| p.escrow.quote.total),
        payer: paid.map_or(verinet_primitives::Address::ZERO, |p| p.escrow.payer),
        chain_id: st.payments.x402.chain_id,
    }
}
