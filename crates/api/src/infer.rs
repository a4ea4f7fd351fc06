//! `POST /v1/infer`: one paid request, top to bottom.
//!
//! resolve the model -> validate inputs against its signature -> price -> pay (escrow) ->
//! execute (the executor signs the receipt) -> capture (fee split, with the result hash) or refund ->
//! answer with outputs, receipt, timings and `PAYMENT-RESPONSE`.
//!
//! Nothing costs money before the inputs are known to fit the model, and once money is in
//! escrow, execution and settlement run in a task of their own: a client that hangs up or an
//! HTTP timeout cannot leave an escrow half-settled.

use std::time::Instant;

use axum::{
    Json,
    body::Bytes,
    extract::{State, rejection::BytesRejection},
    http::HeaderMap,
    response::{IntoResponse, Response},
};
use tracing::{Span, debug, error, instrument, warn};
use verinet_primitives::{
    Address, ModelRef, tensors_hash,
    wire::{
        InferRequest, InferResponse, ModelPolicy, OutputEncoding, PaymentSummary, ResolvedModel, TensorOutputs, TimingsMs,
        VerificationMode,
    },
};
use verinet_ledger::Keep;
use verinet_verify::{Ran, Terms, Tolerance};
use verinet_runtime::RuntimeError;

use verinet_flywheel::RequestEvent;

use crate::{ApiError, AppState, pay, verification};

/// The handler: serves the request, then emits its usage event whatever the outcome.
#[utoipa::path(post, path = "/v1/infer", tag = "inference", summary = "Run a tensor model (paid, receipted, optionally verified)", request_body = verinet_primitives::wire::InferRequest, params(("PAYMENT-SIGNATURE" = Option<String>, Header, description = "x402 v2 payment: base64 JSON of an EIP-3009 (exact) or Permit2 (upto) authorization answering this route's 402 (legacy `X-PAYMENT` too)."), ("X-Verinet-App" = Option<String>, Header, description = "App id tagging the request (or `app` in the body).")), security((), ("session" = [])), responses((status = 200, description = "Outputs, the resolved model, price, payment, timings and the executor's signed receipt", body = verinet_primitives::wire::InferResponse, headers(("PAYMENT-RESPONSE" = Option<String>, description = "x402 settlement (base64 JSON) when paid by x402"))), (status = 402, description = "Payment required: the x402 v2 `PAYMENT-REQUIRED` header (base64 JSON) lists what to sign; pay and retry. Also every payment refusal (docs/payments.md).", body = verinet_primitives::wire::ErrorBody, headers(("PAYMENT-REQUIRED" = String, description = "base64 JSON of x402 PaymentRequired"))), (status = "4XX", description = "Refused: `error.code` says why (docs/api.md, Error codes).", body = verinet_primitives::wire::ErrorBody), (status = "5XX", description = "The node failed or is overloaded (`overloaded`, `busy`, `timeout`, `internal`).", body = verinet_primitives::wire::ErrorBody)))]
#[instrument(skip_all, fields(request_id, model))]
pub(crate) async fn infer(
    State(st): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let mut ev = RequestEvent::default();
    let result = serve(&st, &headers, body, &mut ev).await;
    ev.total_ms = started.elapsed().as_secs_f64() * 1e3;
    match &result {
        Ok(_) => ev.status = 200,
        Err(e) => {
            let (status, code) = e.status_and_code();
            ev.status = status.as_u16();
            ev.error = Some(code.to_owned());
        }
    }
    crate::traffic::served(&st, ev);
    result
}

/// One request, top to bottom. Each numbered step is one concern; `ev` collects what the
/// flywheel counts.
async fn serve(
    st: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
    ev: &mut RequestEvent,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let request_id = new_request_id();
    Span::current().record("request_id", request_id.as_str());

    // 1. Parse. Size is bounded by the route's body limit.
    let body = body.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(_) => ApiError::PayloadTooLarge { limit: st.config.max_infer_body as u64 },
        other => ApiError::InvalidJson(other.body_text()),
    })?;
    // Tensor data goes straight into typed buffers and stops at the element limit.
    let mut req: InferRequest = verinet_primitives::with_element_limit(st.runtime.config().max_input_elements, || serde_json::from_slice(&body))
        .map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    ev.mode = req.verification.as_str().to_owned();
    ev.app = req.app.clone();
    if let Some(p) = req.sample_rate.filter(|p| !(0.0..=1.0).contains(p)) {
        return Err(ApiError::InvalidParameter(format!("sample_rate {p} is not a probability in [0, 1]")));
    }

    // 2. Resolve the model by name, name@version or sha256.
    let model_ref: ModelRef = req.model.parse().map_err(|e: verinet_primitives::Error| ApiError::InvalidModelRef(e.to_string()))?;
    let model = st.hub.resolve_for_call(&model_ref).await?;
    ev.model = Some(model.name.clone());
    if !model.signature.kind.is_onnx() {
        return Err(ApiError::WrongModelKind { model: req.model, kind: model.signature.kind, route: "/v1/infer", serves: "onnx" });
    }
    Span::current().record("model", tracing::field::display(&model.id));

    // 3. Validate inputs against the stored signature before anything costs money or CPU
    //    (bare lists first take the declared dtypes).
    model
        .signature
        .conform_inputs(&mut req.inputs)
        .and_then(|()| model.signature.check_inputs(&req.inputs, st.runtime.config().max_input_elements))
        .map_err(|e| ApiError::Runtime(RuntimeError::Input(e)))?;

    // The model's policy (set at publish) refines the node's: request > model > node.
    let policy = model.policy.as_deref().and_then(|p| serde_json::from_str::<ModelPolicy>(p).ok()).unwrap_or_default();
    let sample_rate = req.sample_rate.or(policy.sample_rate).unwrap_or(st.verification.sample_rate);
    let tolerance = Tolerance {
        abs: policy.tolerance_abs.unwrap_or(st.verification.tolerance.abs),
        rel: policy.tolerance_rel.unwrap_or(st.verification.tolerance.rel),
    };

    // 4. Route: the workers this mode needs, in good standing (the first one is the operator).
    let executors = verification::route(st, req.verification, model.id)?;

    // 5. Price: royalty + compute + verification + protocol (+ app markup).
    let app = match &req.app {
        Some(id) => Some(st.ledger.store().app(id).await?.ok_or_else(|| ApiError::UnknownApp(id.clone()))?),
        None => None,
    };
    let quote = pay::quote(st, &model, req.verification, app.as_ref(), executors[0].address());
    ev.price = quote.total;

    // 6. Pay: free, or an x402 authorization / session token turned into an escrow, atomically
    //    with the request record. Refusals are 402 with a fresh PAYMENT-REQUIRED.
    let input_hash = tensors_hash(&req.inputs);
    ev.payment_attempted = pay::attached(headers);
    let escrow = pay::take(
        st,
        headers,
        &quote,
        pay::INFER,
        &model,
        req.app.as_deref(),
        &request_id,
        &format!("{input_hash:#x}"),
        &mut ev.payer,
    )
    .await?;

    // 7. Execute (and check, by mode), then 8. settle: capture with the result hash, or refund
    //    (no result, or a result refuted by a validator). In its own task so that nothing can
    //    cancel it between the escrow and its settlement.
    // The receipt's terms are fixed before anyone runs: the executor signs them with its
    // result (what was escrowed, for whom).
    let terms = Terms {
        request_id: request_id.clone(),
        input_hash,
        mode: req.verification.as_str().into(),
        price: escrow.as_ref().map_or(0, |e| e.escrow.quote.total),
        payer: escrow.as_ref().map_or(Address::ZERO, |e| e.escrow.payer),
        chain_id: st.payments.x402.chain_id,
    };
    let shape = Shape { request_id: request_id.clone(), encoding: req.output_encoding, mode: req.verification, started };
    let settle = {
        let (st, model, escrow, quote, shape) = (st.clone(), model.clone(), escrow.clone(), quote.clone(), shape.clone());
        let (inputs, mode) = (req.inputs, req.verification);
        async move {
            let policy = verification::Policy { mode, sample_rate, tolerance };
            let result = verification::execute(&st, executors, &model, inputs, policy, &terms).await;
            // Usage counts whatever happened (buffered, never on the durable path).
            st.hub.record_call(&model, result.is_ok());
            let refuted = result.as_ref().is_ok_and(|x| x.check.status == "disputed");
            let settled = match (&escrow, &result) {
                (None, _) => Ok(None),
                (Some(e), Ok(_)) if refuted => {
                    refund(&st, e, "the worker's result was refuted by a validator").await;
                    Ok(None)
                }
                (Some(e), Ok(x)) => {
                    // The answer commits with the capture (and its receipt): whatever happens
                    // to this connection or process, the payer can get it back by retrying.
                    let tx_id = verinet_ledger::new_tx_id();
                    let body = shape.render(x, &model, quote.total, pay::summary(Some(e), Some(&tx_id)));
                    let answer = serde_json::to_string(&body).map_err(|err| ApiError::Internal(format!("encoding the answer: {err}")));
                    capture_kept(&st, e, &x.ran, x.executor.address(), tx_id, answer).await.map(|a| Some((a, body.payment)))
                }
                (Some(e), Err(err)) => {
                    refund(&st, e, &err.to_string()).await;
                    Ok(None)
                }
            };
            (result, settled)
        }
    };
    let (result, settled) = if escrow.is_some() {
        tokio::spawn(settle).await.map_err(|e| ApiError::Internal(format!("settlement task: {e}")))?
    } else {
        // Free: no escrow to leave half-settled, so no task of its own.
        settle.await
    };
    let executed = result?;
    let captured = settled?;
    ev.executor = Some(executed.executor.address());
    ev.check = Some(executed.check.status.clone());
    ev.disputed = executed.check.disputed.clone();
    ev.queue_ms = executed.ran.out.timings.queue.as_secs_f64() * 1e3;
    debug!(
        compute_ms = executed.ran.out.timings.compute.as_secs_f64() * 1e3,
        total_ms = started.elapsed().as_secs_f64() * 1e3,
        price = %quote.total,
        "inference served"
    );

    // 9. The receipt, signed by whoever computed the answer (checked against the terms and
    //    the outputs before it got here); a refuted worker's is replaced by its validator's,
    //    signed at price 0 because the payer is refunded. A captured one is stored already.
    // 10. Answer: as kept with the capture, or (free, refunded) rendered now.
    let resp = match captured {
        Some((answer, payment)) => {
            pay::record_charge(ev, &quote);
            let mut resp = ([(axum::http::header::CONTENT_TYPE, "application/json")], answer).into_response();
            pay::settle_header(st, payment.as_ref(), &mut resp);
            resp
        }
        None => {
            st.receipts.record(&executed.ran.receipt);
            Json(shape.render(&executed, &model, 0, None)).into_response()
        }
    };
    Ok(resp)
}

/// What the answer to one `/v1/infer` request looks like, fixed before it runs.
#[derive(Clone)]
struct Shape {
    request_id: String,
    encoding: OutputEncoding,
    mode: VerificationMode,
    started: Instant,
}

impl Shape {
    /// The answer to send for `x`, at `price` (0 unless captured), with its payment.
    fn render<'a>(
        &self,
        x: &'a verification::Executed,
        model: &verinet_store::ModelVersion,
        price: u128,
        payment: Option<PaymentSummary>,
    ) -> InferResponse<TensorOutputs<'a>> {
        let out = &x.ran.out;
        let outputs = TensorOutputs { tensors: &out.outputs, encoding: self.encoding };
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        InferResponse {
            request_id: self.request_id.clone(),
            model: ResolvedModel { name: model.name.clone(), version: model.version.clone(), sha256: model.id },
            outputs,
            price: price.to_string(),
            verification: self.mode,
            payment,
            receipt: Some(x.ran.receipt.clone()),
            check: (self.mode != VerificationMode::None).then(|| x.check.clone()),
            timings_ms: TimingsMs {
                load: ms(out.timings.load),
                queue: ms(out.timings.queue),
                compute: ms(out.timings.compute),
                total: ms(self.started.elapsed()),
            },
        }
    }
}

/// Captures `e` with the answer kept beside it (a retry with the same payment gets it back), the
/// answer rendered for the capture's transaction `tx_id`; an answer that could not be encoded
/// refunds the payer instead. Returns the answer to send.
pub(crate) async fn capture_kept(
    st: &AppState,
    e: &pay::Paid,
    ran: &Ran,
    operator: Address,
    tx_id: String,
    answer: Result<String, ApiError>,
) -> Result<String, ApiError> {
    let answer = match answer {
        Ok(a) => a,
        Err(err) => {
            refund(st, e, "the answer could not be encoded").await;
            return Err(err);
        }
    };
    let keep = Keep { tx_id, answer, receipt: st.receipts.record_of(&ran.receipt) };
    let hash = format!("{:#x}", ran.receipt.receipt.output_hash);
    capture(st, e, &hash, operator, Some(keep.clone())).await.map(|_| keep.answer)
}

/// Pays the split and records the result hash. If that fails the payer must not lose: the
/// escrow is refunded (or, if even that fails, left for recovery at the next start).
///
/// The compute fee goes to `operator`, whoever served in the end (a retry may have moved the
/// request off the worker quoted).
pub(crate) async fn capture(st: &AppState, e: &pay::Paid, output_hash: &str, operator: Address, keep: Option<Keep>) -> Result<String, ApiError> {
    let mut escrow = e.escrow.clone();
    escrow.quote.payees.operator = operator;
    let note = keep.as_ref().map(|k| verinet_verify::ReceiptLog::stored_note(&k.receipt));
    let result = st.ledger.capture(&escrow, output_hash, keep).await;
    captured(st, e, note, result).await
}

/// Captures `used` (a quote of what the call used, at most the escrowed one) for the executor
/// `operator`, refunding the rest; on failure refunds it all. Returns the transaction and the
/// quote as charged.
pub(crate) async fn capture_used(
    st: &AppState,
    e: &pay::Paid,
    mut used: verinet_ledger::Quote,
    output_hash: &str,
    operator: Address,
    memo: &str,
    keep: Option<Keep>,
) -> Result<(String, verinet_ledger::Quote), ApiError> {
    let mut escrow = e.escrow.clone();
    escrow.quote.payees.operator = operator;
    used.payees.operator = operator;
    let note = keep.as_ref().map(|k| verinet_verify::ReceiptLog::stored_note(&k.receipt));
    let result = st.ledger.capture_used(&escrow, &used, output_hash, memo, keep).await;
    captured(st, e, note, result).await.map(|tx| (tx, used))
}

/// What follows a capture of `e`: once it committed, the receipt it stored (`note`) goes to
/// the receipt log, to be sealed by id; if it failed, the escrow is refunded.
async fn captured(
    st: &AppState,
    e: &pay::Paid,
    note: Option<verinet_store::ReceiptRecord>,
    result: verinet_ledger::Result<String>,
) -> Result<String, ApiError> {
    match result {
        Ok(tx) => {
            if let Some(n) = note {
                st.receipts.record_stored(n);
            }
            Ok(tx)
        }
        Err(err) => {
            error!(request_id = %e.escrow.request_id, %err, "capture failed; refunding");
            refund(st, e, "capture failed").await;
            Err(err.into())
        }
    }
}

pub(crate) async fn refund(st: &AppState, e: &pay::Paid, reason: &str) {
    let esc = &e.escrow;
    if let Err(err) = st.ledger.refund_to(&esc.request_id, esc.payer, esc.quote.total, esc.session.as_deref(), reason).await {
        // The escrow stays; recovery refunds it at the next start.
        warn!(request_id = %esc.request_id, %err, "refund failed; left for recovery");
    }
}



/// 128 bits as hex, the time in ms then 80 random bits: unique without coordination between
/// gateways, and time-ordered, so the payment and receipt indexes keyed by it grow at one end.
pub(crate) fn new_request_id() -> String {
    verinet_primitives::time_ordered_id(16)
}
