use std::path::Path;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::{Response, multipart};
use serde::de::DeserializeOwned;
use alloy_signer_local::PrivateKeySigner;
use verinet_payments::{
    SpendingCap, sign_payment, unix_now,
    wire::{PAYMENT_REQUIRED, PAYMENT_RESPONSE, PAYMENT_SIGNATURE, PaymentRequired, SettleResponse, decode_header, encode_header},
};
use verinet_primitives::{
    Address, ModelId,
    wire::{
        AccountInfo, AppInfo, AppList, AppRegistration, ErrorBody, FaucetRequest, FaucetResponse, Health, InferRequest,
        InferResponse, ModelInfo, ModelList, ModelVersionInfo, PaymentInfo, PublishRequest, SessionInfo, TransferInfo, TransferRequest,
    },
};

use crate::{ClientError, Result};

/// A node's HTTP API.
#[derive(Clone, Debug)]
pub struct Client {
    base: String,
    pub(crate) http: reqwest::Client,
}

/// Query of [`Client::list_models`].
#[derive(Debug, Default, Clone)]
pub struct ListParams {
    /// Text search.
    pub q: Option<String>,
    /// Exact tag.
    pub tag: Option<String>,
    /// `usage` (default), `name` or `newest`.
    pub sort: Option<String>,
    /// Page size.
    pub limit: Option<u32>,
}

impl Client {
    /// A client for the node at `base` (e.g. `http://127.0.0.1:8080`; a bare `host:port`, the
    /// form `verinet up --listen` takes, means `http://host:port`).
    pub fn new(base: impl Into<String>) -> Self {
        let http = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap_or_default();
        let base = base.into();
        let base = if base.contains("://") { base } else { format!("http://{base}") };
        Self { base: base.trim_end_matches('/').to_owned(), http }
    }

    /// Base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// `GET <path>` as untyped JSON (status pages, `/v1/nodes`, a worker's health).
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value> {
        decode(self.http.get(self.url(path)).send().await?).await
    }

    /// `GET /health`.
    pub async fn health(&self) -> Result<Health> {
        decode(self.http.get(self.url("/health")).send().await?).await
    }

    /// `POST /v1/infer`.
    pub async fn infer(&self, req: &InferRequest) -> Result<InferResponse> {
        decode(self.http.post(self.url("/v1/infer")).json(req).send().await?).await
    }

    /// `POST /v1/infer`, paying with x402 if the node answers 402: signs an EIP-3009
    /// authorization for the quoted price with `signer` and retries once. Also returns the
    /// decoded `PAYMENT-RESPONSE` when there was one.
    pub async fn infer_paid(
        &self,
        req: &InferRequest,
        signer: &PrivateKeySigner,
    ) -> Result<(InferResponse, Option<SettleResponse>)> {
        let resp = self.http.post(self.url("/v1/infer")).json(req).send().await?;
        if resp.status().as_u16() != 402 {
            return Ok((decode(resp).await?, None));
        }
        let required = payment_required(&resp)?;
        let accepted = required
            .accepts
            .first()
            .ok_or_else(|| ClientError::Decode("402 without any accepted payment".into()))?;
        let payload = sign_payment(accepted, required.resource.clone(), signer, unix_now())
            .map_err(|e| ClientError::Decode(format!("cannot sign the payment: {e}")))?;
        self.infer_with_header(req, PAYMENT_SIGNATURE, &encode_header(&payload)).await
    }

    /// `POST /v1/infer` with one extra header (a payment, or a `Authorization: Bearer` token).
    pub async fn infer_with_header(
        &self,
        req: &InferRequest,
        name: &str,
        value: &str,
    ) -> Result<(InferResponse, Option<SettleResponse>)> {
        let resp = self.http.post(self.url("/v1/infer")).header(name, value).json(req).send().await?;
        let settled = resp
            .headers()
            .get(PAYMENT_RESPONSE)
            .and_then(|v| v.to_str().ok())
            .map(decode_header::<SettleResponse>)
            .transpose()
            .map_err(ClientError::Decode)?;
        Ok((decode(resp).await?, settled))
    }

    /// The node's `PAYMENT-REQUIRED` for `req` (sends it unpaid; errors if it is not a 402).
    pub async fn quote(&self, req: &InferRequest) -> Result<PaymentRequired> {
        let resp = self.http.post(self.url("/v1/infer")).json(req).send().await?;
        if resp.status().as_u16() != 402 {
            ok(resp).await?;
            return Err(ClientError::Decode("the node did not ask for payment".into()));
        }
        payment_required(&resp)
    }

    /// `GET /v1/accounts/{address}`.
    pub async fn account(&self, address: Address) -> Result<AccountInfo> {
        decode(self.http.get(self.url(&format!("/v1/accounts/{address}"))).send().await?).await
    }

    /// `POST /v1/faucet` (devnet).
    pub async fn faucet(&self, address: Address, amount: Option<u128>) -> Result<FaucetResponse> {
        let body = FaucetRequest { address, amount: amount.map(|a| a.to_string()) };
        decode(self.http.post(self.url("/v1/faucet")).json(&body).send().await?).await
    }

    /// `POST /v1/apps`.
    pub async fn register_app(&self, reg: &AppRegistration) -> Result<AppInfo> {
        decode(self.http.post(self.url("/v1/apps")).json(reg).send().await?).await
    }

    /// `GET /v1/apps/{id}`.
    pub async fn app(&self, id: &str) -> Result<AppInfo> {
        decode(self.http.get(self.url(&format!("/v1/apps/{id}"))).send().await?).await
    }

    /// `GET /v1/apps?owner=`: `owner`'s apps, newest first.
    pub async fn apps(&self, owner: Address) -> Result<Vec<AppInfo>> {
        let list: AppList = decode(self.http.get(self.url("/v1/apps")).query(&[("owner", owner.to_string())]).send().await?).await?;
        Ok(list.apps)
    }

    /// `POST /v1/transfers`: signs (EIP-191) and sends `amount` base units from `from`'s
    /// available balance to `to`, with a fresh random nonce.
    pub async fn transfer(&self, from: &PrivateKeySigner, to: Address, amount: u128) -> Result<TransferInfo> {
        use alloy_signer::SignerSync;
        let nonce = rand::random::<[u8; 16]>();
        let mut req = TransferRequest {
            from: from.address(),
            to,
            amount: amount.to_string(),
            nonce: format!("0x{}", hex::encode(nonce)),
            timestamp: unix_now(),
            signature: String::new(),
        };
        let sig = from.sign_message_sync(req.message().as_bytes()).map_err(|e| ClientError::Sign(e.to_string()))?;
        req.signature = format!("0x{}", hex::encode(sig.as_bytes()));
        self.send_transfer(&req).await
    }

    /// `POST /v1/transfers` with a request signed elsewhere.
    pub async fn send_transfer(&self, req: &TransferRequest) -> Result<TransferInfo> {
        decode(self.http.post(self.url("/v1/transfers")).json(req).send().await?).await
    }

    /// `POST /v1/sessions`: a signed spending cap for a bearer token.
    pub async fn open_session(&self, cap: &SpendingCap) -> Result<SessionInfo> {
        decode(self.http.post(self.url("/v1/sessions")).json(cap).send().await?).await
    }

    /// Signs a spending cap with `payer` (EIP-712, in the chain this node states at `/health`)
    /// for at most `max_total` base units over `models` (empty: any), valid `secs` from now,
    /// and opens it: the answer's `token` pays calls as `Authorization: Bearer <token>`.
    pub async fn open_session_signed(&self, payer: &PrivateKeySigner, max_total: u128, models: Vec<String>, secs: u64) -> Result<SessionInfo> {
        use alloy_signer::SignerSync;
        let chain_id = self.health().await?.token.map_or(31337, |t| t.chain_id);
        let mut cap = SpendingCap {
            payer: payer.address(),
            max_total: max_total.to_string(),
            expiry: unix_now() + secs,
            models,
            nonce: alloy_primitives::B256::from(rand::random::<[u8; 32]>()),
            signature: String::new(),
        };
        let hash = cap.signing_hash(chain_id).map_err(|e| ClientError::Sign(e.to_string()))?;
        let sig = payer.sign_hash_sync(&hash).map_err(|e| ClientError::Sign(e.to_string()))?;
        cap.signature = format!("0x{}", hex::encode(sig.as_bytes()));
        self.open_session(&cap).await
    }

    /// `GET /v1/flywheel?window=SECS`.
    pub async fn flywheel(&self, window_secs: u64) -> Result<verinet_flywheel::Report> {
        let url = self.url(&format!("/v1/flywheel?window={window_secs}"));
        decode(self.http.get(url).send().await?).await
    }

    /// `GET /v1/flywheel?window=SECS&end=MS`: the window that ends at `end_ms` (unix ms).
    pub async fn flywheel_until(&self, window_secs: u64, end_ms: i64) -> Result<verinet_flywheel::Report> {
        let url = self.url(&format!("/v1/flywheel?window={window_secs}&end={end_ms}"));
        decode(self.http.get(url).send().await?).await
    }

    /// `GET /v1/payments/{request_id}`.
    pub async fn payment(&self, request_id: &str) -> Result<PaymentInfo> {
        decode(self.http.get(self.url(&format!("/v1/payments/{request_id}"))).send().await?).await
    }

    /// `POST /v1/infer` with a raw body (for tests of malformed input).
    pub async fn infer_raw(&self, body: impl Into<reqwest::Body>) -> Result<InferResponse> {
        let resp = self.http.post(self.url("/v1/infer")).header("content-type", "application/json").body(body).send().await?;
        decode(resp).await
    }

    /// `GET /v1/models` (OpenAI's list shape; the hub's record of each entry).
    pub async fn list_models(&self, p: &ListParams) -> Result<ModelList> {
        let q: Vec<(&str, String)> = [
            ("q", p.q.clone()),
            ("tag", p.tag.clone()),
            ("sort", p.sort.clone()),
            ("limit", p.limit.map(|v| v.to_string())),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
        let page: verinet_primitives::openai::ModelPage = decode(self.http.get(self.url("/v1/models")).query(&q).send().await?).await?;
        Ok(ModelList { models: page.data.into_iter().map(|e| e.hub).collect() })
    }

    /// `GET /v1/models/{name}`.
    pub async fn model(&self, name: &str) -> Result<ModelInfo> {
        decode(self.http.get(self.url(&format!("/v1/models/{name}"))).send().await?).await
    }

    /// `GET /v1/models/{name}/{version}`.
    pub async fn model_version(&self, name: &str, version: &str) -> Result<ModelVersionInfo> {
        decode(self.http.get(self.url(&format!("/v1/models/{name}/{version}"))).send().await?).await
    }

    /// `GET /v1/blobs/{sha256}` from this node (a hub or a peer), hashed while it streams in;
    /// bytes that do not hash to `id` are refused with [`ClientError::HashMismatch`], so a
    /// worker never runs a model other than the one named.
    pub async fn fetch_model(&self, id: &ModelId) -> Result<Bytes> {
        let mut resp = ok(self.http.get(self.url(&format!("/v1/blobs/{}", id.hex()))).send().await?).await?;
        let mut hasher = verinet_primitives::Sha256Hasher::new();
        let mut bytes = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            hasher.update(&chunk);
            bytes.extend_from_slice(&chunk);
        }
        let got = hasher.finish();
        if got != *id {
            return Err(ClientError::HashMismatch { expected: id.to_string(), got: got.to_string() });
        }
        Ok(Bytes::from(bytes))
    }

    /// `GET /v1/blobs/{sha256}`, whole.
    pub async fn blob(&self, id: &ModelId) -> Result<Bytes> {
        let resp = ok(self.http.get(self.url(&format!("/v1/blobs/{}", id.hex()))).send().await?).await?;
        Ok(resp.bytes().await?)
    }

    /// `POST /v1/models` from a file, streamed; `progress` is called with bytes sent so far.
    pub async fn publish_file(
        &self,
        meta: &PublishRequest,
        path: &Path,
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<ModelVersionInfo> {
        let file = tokio::fs::File::open(path).await?;
        let len = file.metadata().await?.len();
        let mut sent = 0u64;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 << 10).map(move |chunk| {
            if let Ok(c) = &chunk {
                sent += c.len() as u64;
                progress(sent);
            }
            chunk
        });
        let part = multipart::Part::stream_with_length(reqwest::Body::wrap_stream(stream), len)
            .file_name("model.onnx")
            .mime_str("application/octet-stream")?;
        self.publish_part(meta, part).await
    }

    /// `POST /v1/models` from any byte stream of known length (tests use this for odd bodies).
    pub async fn publish_stream<S>(&self, meta: &PublishRequest, body: S, len: u64) -> Result<ModelVersionInfo>
    where
        S: Stream<Item = std::result::Result<Bytes, std::io::Error>> + Send + Sync + 'static,
    {
        let part = multipart::Part::stream_with_length(reqwest::Body::wrap_stream(body), len).file_name("model.onnx");
        self.publish_part(meta, part).await
    }

    /// `POST /v1/models` with bytes in memory.
    pub async fn publish_bytes(&self, meta: &PublishRequest, bytes: Vec<u8>) -> Result<ModelVersionInfo> {
        self.publish_part(meta, multipart::Part::bytes(bytes).file_name("model.onnx")).await
    }

    async fn publish_part(&self, meta: &PublishRequest, part: multipart::Part) -> Result<ModelVersionInfo> {
        let meta_json = serde_json::to_string(meta).map_err(|e| ClientError::Decode(e.to_string()))?;
        let form = multipart::Form::new()
            .part("metadata", multipart::Part::text(meta_json).mime_str("application/json")?)
            .part("model", part);
        decode(self.http.post(self.url("/v1/models")).multipart(form).send().await?).await
    }
}

fn payment_required(resp: &Response) -> Result<PaymentRequired> {
    let header = resp
        .headers()
        .get(PAYMENT_REQUIRED)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ClientError::Decode("402 without a PAYMENT-REQUIRED header".into()))?;
    decode_header(header).map_err(ClientError::Decode)
}

pub(crate) async fn ok(resp: Response) -> Result<Response> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    Err(match serde_json::from_str::<ErrorBody>(&text) {
        Ok(b) => ClientError::Api { status, code: b.error.code, message: b.error.message },
        Err(_) => ClientError::Api { status, code: "http_error".into(), message: text },
    })
}

async fn decode<T: DeserializeOwned>(resp: Response) -> Result<T> {
    let bytes = ok(resp).await?.bytes().await?;
    serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
}
