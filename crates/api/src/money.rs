//! Money endpoints: accounts, the devnet faucet, apps, spending sessions, payment records and
//! the x402 facilitator API.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, State, rejection::BytesRejection},
    http::StatusCode,
};
use serde::de::DeserializeOwned;
use tracing::{info, instrument};
use verinet_ledger::AccountView;
use verinet_payments::{
    PaymentError, SpendingCap, new_session_token, token_hash, unix_now,
    wire::{FacilitatorRequest, SettleResponse, Supported, VerifyResponse},
};
use verinet_primitives::{
    Address, validate_model_name,
    wire::{AccountInfo, AppInfo, AppList, AppRegistration, FaucetRequest, FaucetResponse, PaymentInfo, SessionInfo, TransferInfo, TransferRequest},
};
use verinet_store::{App, SpendingSession, StoreError};

use crate::{ApiError, AppState};

/// How far an app registration's timestamp may be from the node's clock.
const MAX_SKEW_SECS: u64 = 600;

fn parse<T: DeserializeOwned>(body: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let body = body.map_err(|e| ApiError::InvalidJson(e.body_text()))?;
    serde_json::from_slice(&body).map_err(|e| ApiError::InvalidJson(e.to_string()))
}

/// An EIP-191 `signature` over `message` made within [`MAX_SKEW_SECS`] of now by `signer`
/// (the request's `role`: owner, sender).
fn check_signed(message: &str, signature: &str, timestamp: u64, signer: Address, role: &str) -> Result<(), ApiError> {
    let now = unix_now();
    if timestamp.abs_diff(now) > MAX_SKEW_SECS {
        return Err(ApiError::StaleSignature(format!(
            "timestamp {timestamp} is more than {MAX_SKEW_SECS} s from the node's clock ({now})"
        )));
    }
    let sig = verinet_payments::recover(signature, alloy_primitives::eip191_hash_message(message))
        .map_err(|e| ApiError::BadSignature(e.to_string()))?;
    if sig != signer {
        return Err(ApiError::BadSignature(format!("signed by {sig}, not by {role} {signer}")));
    }
    Ok(())
}

fn amount(s: &str, what: &str) -> Result<u128, ApiError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ApiError::InvalidAmount(format!("{what} {s:?} is not a base-unit integer")));
    }
    s.parse().map_err(|_| ApiError::InvalidAmount(format!("{what} {s:?} is out of range")))
}


pub(crate) fn account_info(v: &AccountView) -> AccountInfo {
    AccountInfo {
        address: v.address,
        balance: v.balances.available.to_string(),
        escrow: v.balances.escrow.to_string(),
        stake: v.balances.stake.to_string(),
        earnings: v.earnings.iter().map(|(r, a)| (r.to_string(), a.to_string())).collect(),
        spent: v.spent.to_string(),
    }
}

/// `GET /v1/accounts/{address}`.
#[utoipa::path(get, path = "/v1/accounts/{address}", tag = "money", summary = "An account's balance, escrow, stake and earnings", params(("address" = String, Path, description = "Ethereum address")), responses((status = 200, body = verinet_primitives::wire::AccountInfo), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
pub(crate) async fn account(State(st): State<AppState>, Path(address): Path<String>) -> Result<Json<AccountInfo>, ApiError> {
    let address: Address =
        address.parse().map_err(|e| ApiError::InvalidAddress(format!("{address:?} is not an address: {e}")))?;
    Ok(Json(account_info(&st.ledger.account(address).await?)))
}

/// `POST /v1/faucet`: devnet money, up to the configured maximum per call.
#[utoipa::path(post, path = "/v1/faucet", tag = "money", summary = "Devnet money (403 faucet_disabled elsewhere)", request_body = verinet_primitives::wire::FaucetRequest, responses((status = 200, body = verinet_primitives::wire::FaucetResponse), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
#[instrument(skip_all)]
pub(crate) async fn faucet(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<FaucetResponse>, ApiError> {
    let max = st.payments.faucet_max.ok_or(ApiError::FaucetDisabled)?;
    let req: FaucetRequest = parse(body)?;
    let value = match &req.amount {
        Some(a) => amount(a, "amount")?,
        None => st.payments.faucet_drip,
    };
    if value == 0 || value > max {
        return Err(ApiError::InvalidAmount(format!("the faucet mints between 1 and {max} base units per call")));
    }
    let tx = st.ledger.mint(req.address, value).await?;
    info!(to = %req.address, amount = %value, "faucet");
    Ok(Json(FaucetResponse {
        transaction: tx,
        amount: value.to_string(),
        account: account_info(&st.ledger.account(req.address).await?),
    }))
}

fn app_info(a: &App) -> AppInfo {
    AppInfo { id: a.id.clone(), name: a.name.clone(), owner: a.owner, markup: a.markup.to_string(), created_at_ms: a.created_at_ms }
}

/// `POST /v1/apps`: the owner's EIP-191 signature registers an app; its id is derived from
/// (owner, name).
#[utoipa::path(post, path = "/v1/apps", tag = "money", summary = "Register an app (its owner earns a markup per call)", request_body = verinet_primitives::wire::AppRegistration, responses((status = 201, body = verinet_primitives::wire::AppInfo), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
#[instrument(skip_all)]
pub(crate) async fn register_app(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<AppInfo>), ApiError> {
    let req: AppRegistration = parse(body)?;
    validate_model_name(&req.name).map_err(|e| ApiError::InvalidParameter(format!("app name: {e}")))?;
    let markup = amount(&req.markup, "markup")?;
    check_signed(&req.message(), &req.signature, req.timestamp, req.owner, "owner")?;
    let app = App { id: req.app_id(), name: req.name, owner: req.owner, markup, created_at_ms: verinet_primitives::unix_ms() };
    st.ledger.store().insert_app(&app).await?;
    info!(id = %app.id, owner = %app.owner, "app registered");
    Ok((StatusCode::CREATED, Json(app_info(&app))))
}

/// How many apps `GET /v1/apps` returns at most.
const MAX_APPS: usize = 1000;

/// `?owner=` of `GET /v1/apps`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct AppsQuery {
    /// The owner's address (required).
    #[param(value_type = String)]
    owner: Option<String>,
}

/// `GET /v1/apps?owner=0x…`: an owner's apps, newest first.
#[utoipa::path(get, path = "/v1/apps", tag = "money", summary = "An owner's apps, newest first", params(AppsQuery), responses((status = 200, body = AppList), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
pub(crate) async fn list_apps(
    State(st): State<AppState>,
    query: Result<axum::extract::Query<AppsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AppList>, ApiError> {
    let q = query.map_err(|e| ApiError::InvalidParameter(e.body_text()))?.0;
    let owner = q.owner.ok_or_else(|| ApiError::InvalidParameter("owner is required: GET /v1/apps?owner=0x…".into()))?;
    let owner: Address = owner.parse().map_err(|_| ApiError::InvalidParameter(format!("owner {owner:?} is not an address")))?;
    let apps = st.ledger.store().apps_by_owner(owner, MAX_APPS).await?;
    Ok(Json(AppList { apps: apps.iter().map(app_info).collect() }))
}

/// `POST /v1/transfers`: the sender's EIP-191 signature moves part of its available balance.
#[utoipa::path(post, path = "/v1/transfers", tag = "money", summary = "Send tokens to another account (signed by the sender)", request_body = TransferRequest, responses((status = 200, body = TransferInfo), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
#[instrument(skip_all)]
pub(crate) async fn transfer(State(st): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Json<TransferInfo>, ApiError> {
    let req: TransferRequest = parse(body)?;
    let value = amount(&req.amount, "amount")?;
    if value == 0 {
        return Err(ApiError::InvalidAmount("amount must be more than 0".into()));
    }
    if req.nonce.is_empty() || req.nonce.len() > 128 {
        return Err(ApiError::InvalidParameter("nonce must be 1 to 128 characters".into()));
    }
    if req.from == req.to {
        return Err(ApiError::InvalidParameter(format!("a transfer from {} to itself", req.from)));
    }
    check_signed(&req.message(), &req.signature, req.timestamp, req.from, "sender")?;
    let tx = st.ledger.send(req.from, req.to, value, &req.nonce).await?;
    info!(from = %req.from, to = %req.to, amount = value, "transfer");
    Ok(Json(TransferInfo {
        tx,
        from: req.from,
        to: req.to,
        amount: value.to_string(),
        account: account_info(&st.ledger.account(req.from).await?),
    }))
}

/// `GET /v1/apps/{id}`.
#[utoipa::path(get, path = "/v1/apps/{id}", tag = "money", summary = "An app", params(("id" = String, Path, description = "App id, `app-...`")), responses((status = 200, body = verinet_primitives::wire::AppInfo), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
pub(crate) async fn app(State(st): State<AppState>, Path(id): Path<String>) -> Result<Json<AppInfo>, ApiError> {
    let app = st.ledger.store().app(&id).await?.ok_or_else(|| ApiError::UnknownApp(id))?;
    Ok(Json(app_info(&app)))
}

/// `POST /v1/sessions`: a payer's EIP-712 signed spending cap -> a bearer token.
#[utoipa::path(post, path = "/v1/sessions", tag = "money", summary = "Exchange an EIP-712 signed spending cap for a bearer token", request_body = verinet_payments::SpendingCap, responses((status = 201, description = "The token is shown once", body = verinet_primitives::wire::SessionInfo), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
#[instrument(skip_all)]
pub(crate) async fn open_session(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<SessionInfo>), ApiError> {
    let cap: SpendingCap = parse(body)?;
    let chain_id = st.payments.x402.chain_id;
    let max_total = cap.verify(chain_id, unix_now()).map_err(|e| match e {
        PaymentError::InvalidSignature(m) => ApiError::BadSignature(m),
        other => ApiError::InvalidAmount(other.to_string()),
    })?;
    let expires_at = i64::try_from(cap.expiry).map_err(|_| ApiError::InvalidAmount("expiry out of range".into()))?;
    let token = new_session_token();
    let session = SpendingSession {
        id: format!("ses-{}", &token_hash(&token)[2..18]),
        token_hash: token_hash(&token),
        payer: cap.payer,
        max_total,
        spent: 0,
        expires_at,
        models: cap.models.clone(),
        nonce: format!("{:#x}", cap.nonce),
        created_at_ms: verinet_primitives::unix_ms(),
    };
    st.ledger.store().insert_session(&session).await?;
    info!(id = %session.id, payer = %session.payer, "spending session opened");
    Ok((
        StatusCode::CREATED,
        Json(SessionInfo {
            id: session.id,
            token,
            payer: cap.payer,
            max_total: max_total.to_string(),
            expires_at: cap.expiry,
            models: cap.models,
        }),
    ))
}

/// `GET /v1/payments/by-nonce/{payer}/{nonce}`: what an x402 authorization paid for, as a
/// retry with its header would get it: the kept answer (200, `x-verinet-answered-before`,
/// `PAYMENT-RESPONSE`), 409 `payment_in_flight` while its request runs, or 404 saying what
/// became of it. The nonce is the capability: whoever holds the signed authorization may read
/// the answer it paid for.
#[utoipa::path(get, path = "/v1/payments/by-nonce/{payer}/{nonce}", tag = "money", summary = "The answer an x402 authorization paid for (a lost response, recovered)", params(("payer" = String, Path, description = "Payer address"), ("nonce" = String, Path, description = "The authorization's nonce, 0x hex")), responses((status = 200, description = "The kept answer, as the paid request returned it", body = verinet_primitives::wire::InferResponse), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
pub(crate) async fn payment_by_nonce(
    State(st): State<AppState>,
    Path((payer, nonce)): Path<(String, String)>,
) -> Result<axum::response::Response, ApiError> {
    let payer: verinet_primitives::Address = payer.parse().map_err(|e| ApiError::InvalidAddress(format!("payer {payer:?}: {e}")))?;
    let nonce = nonce.to_lowercase();
    let why = format!("no x402 payment by {payer} with nonce {nonce} on this node");
    match crate::pay::paid_before(&st, payer, &nonce, None, why).await? {
        Ok(answer) => Err(answer),
        Err(verinet_payments::PaymentError::NonceUsed(m)) => Err(ApiError::NotFound(m)),
        Err(other) => Err(ApiError::NotFound(other.to_string())),
    }
}

/// `GET /v1/payments/{request_id}`.
#[utoipa::path(get, path = "/v1/payments/{request_id}", tag = "money", summary = "A paid request and how it ended", params(("request_id" = String, Path, description = "Request id")), responses((status = 200, body = verinet_primitives::wire::PaymentInfo), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
pub(crate) async fn payment(
    State(st): State<AppState>,
    Path(request_id): Path<String>,
) -> Result<Json<PaymentInfo>, ApiError> {
    let p = st
        .ledger
        .store()
        .payment(&request_id)
        .await?
        .ok_or_else(|| ApiError::Store(StoreError::NotFound(format!("payment for request {request_id}"))))?;
    Ok(Json(PaymentInfo {
        request_id: p.request_id,
        status: p.status.to_string(),
        payer: p.payer,
        amount: p.amount.to_string(),
        model: p.model,
        app: p.app,
        method: p.method,
        input_hash: p.input_hash,
        output_hash: p.output_hash,
        reason: p.reason,
        escrow_tx: p.escrow_tx,
        settle_tx: p.settle_tx,
        quote: serde_json::from_str(&p.quote).unwrap_or_default(),
    }))
}

/// `GET /x402/supported`.
#[utoipa::path(get, path = "/x402/supported", tag = "x402", summary = "x402 facilitator: supported schemes and networks", responses((status = 200, body = verinet_payments::wire::Supported)))]
pub(crate) async fn x402_supported(State(st): State<AppState>) -> Json<Supported> {
    Json(st.facilitator.supported())
}

/// `POST /x402/verify`: HTTP 200 with `isValid`, as x402 facilitator clients expect.
#[utoipa::path(post, path = "/x402/verify", tag = "x402", summary = "x402 facilitator: check a payment without settling it", request_body = verinet_payments::wire::FacilitatorRequest, responses((status = 200, body = verinet_payments::wire::VerifyResponse), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
pub(crate) async fn x402_verify(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<VerifyResponse>, ApiError> {
    let req: FacilitatorRequest = parse(body)?;
    Ok(Json(st.facilitator.verify(&req).await?))
}

/// `POST /x402/settle`: HTTP 200 with `success`.
#[utoipa::path(post, path = "/x402/settle", tag = "x402", summary = "x402 facilitator: settle a payment on the ledger", request_body = verinet_payments::wire::FacilitatorRequest, responses((status = 200, body = verinet_payments::wire::SettleResponse), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
pub(crate) async fn x402_settle(
    State(st): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<SettleResponse>, ApiError> {
    let req: FacilitatorRequest = parse(body)?;
    Ok(Json(st.facilitator.settle(&req).await?))
}

/// `GET /v1/ledger/audit`: what an operator checks of the ledger (every amount in base units):
/// totals per bucket, accounts, open escrows (count, amount, age of the oldest), payments per
/// status, and whether each invariant holds: money is conserved (minted = available + escrow +
/// stake), the escrow bucket is exactly what open payments hold, no balance is negative.
#[utoipa::path(get, path = "/v1/ledger/audit", tag = "money", summary = "Ledger totals, open escrows and whether every invariant holds", responses((status = 200, description = "`holds`, `checks` [{name, holds, detail}], totals in base units, accounts, open escrows, payments per status", body = Object), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
#[instrument(skip_all)]
pub(crate) async fn ledger_audit(State(st): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let a = st.ledger.store().audit().await?;
    let t = &a.totals;
    let checks = [
        ("conservation", t.balanced(), format!("minted {} = available {} + escrow {} + stake {}", t.minted, t.available, t.escrow, t.stake)),
        (
            "escrow_is_open_payments",
            t.escrow == a.open_escrow_amount,
            format!("escrow {} = {} held by {} open payment(s)", t.escrow, a.open_escrow_amount, a.open_escrows),
        ),
        ("no_negative_balance", a.negative_balances == 0, format!("{} negative balance(s)", a.negative_balances)),
    ];
    let holds = checks.iter().all(|c| c.1);
    let now = verinet_primitives::unix_ms();
    Ok(Json(serde_json::json!({
        "holds": holds,
        "checks": checks.iter().map(|(name, ok, detail)| serde_json::json!({"name": name, "holds": ok, "detail": detail})).collect::<Vec<_>>(),
        "minted": t.minted.to_string(),
        "available": t.available.to_string(),
        "escrow": t.escrow.to_string(),
        "stake": t.stake.to_string(),
        "accounts": a.accounts,
        "open_escrows": {
            "count": a.open_escrows,
            "amount": a.open_escrow_amount.to_string(),
            "oldest_age_ms": a.oldest_open_escrow_ms.map(|at| now.saturating_sub(at)),
        },
        "payments": a.payments,
    })))
}
