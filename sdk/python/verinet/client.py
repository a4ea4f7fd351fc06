"""The node client: inference with automatic x402 payment under a spend limit, spending
sessions, publishing, the faucet, balances, receipts and inclusion proofs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Dict, Iterable, List, Mapping, Optional, Union

import httpx
import numpy as np
from eth_account.messages import encode_defunct
from eth_utils import to_checksum_address

from . import crypto, x402
from .amounts import DEFAULT_DECIMALS, DEFAULT_SYMBOL, Amount, format_amount, from_base_units, to_base_units
from .errors import (
    ConnectionFailed,
    PaymentRequired,
    ReceiptPending,
    SpendLimitExceeded,
    VerinetError,
    error_class,
)
from .tensors import as_array, from_json, to_json
from .verify import ProofResult, VerifyResult, verify, verify_proof


@dataclass
class InferResult:
    """A ``/v1/infer`` answer. Amounts (``price``) are base units; ``client.format_amount``
    shows them in tokens."""

    request_id: str
    #: ``{"name", "version", "sha256"}`` of the model that ran.
    model: Dict[str, Any]
    #: Output tensors by name, as numpy arrays of the node's dtypes.
    outputs: Dict[str, np.ndarray]
    #: Price charged, base units.
    price: int
    #: ``none``, ``sampled`` or ``quorum``.
    verification: str
    #: How it was paid (``method`` x402/session, ``payer``, ``amount``, ``escrow_tx``,
    #: ``settle_tx``, called ``capture_tx`` by older nodes); ``None`` when free.
    payment: Optional[Dict[str, Any]]
    #: The executor's signed receipt (``receipt``, ``chain_id``, ``digest``, ``signature``).
    receipt: Optional[Dict[str, Any]]
    #: How a ``sampled``/``quorum`` result was checked.
    check: Optional[Dict[str, Any]]
    timings_ms: Dict[str, float]
    #: The decoded ``PAYMENT-RESPONSE`` of an x402 payment.
    settlement: Optional[Dict[str, Any]]
    #: The inputs sent, as the node hashed them (for :func:`verinet.verify`'s input check).
    inputs: Dict[str, np.ndarray]
    #: The response JSON as the node sent it.
    raw: Dict[str, Any] = field(repr=False)

    def verify(self, expected_signer: Optional[str] = None, *, strict: bool = False) -> VerifyResult:
        """:func:`verinet.verify` on this result."""
        return verify(self, expected_signer, strict=strict)


@dataclass
class Balance:
    """``GET /v1/accounts/{address}``, amounts in base units."""

    address: str
    available: int
    escrow: int
    stake: int
    #: Earned so far by role (``creator``, ``operator``, ``validator``, ``protocol``, ``app``, ``payee``).
    earnings: Dict[str, int]
    #: Paid so far for calls (0 on nodes that do not report it).
    spent: int
    raw: Dict[str, Any] = field(repr=False)


@dataclass
class Session:
    """A spending session: the node pays this client's calls from ``max_total`` (base units)
    until ``expires_at`` (unix seconds), for ``models`` (empty: any)."""

    id: str
    token: str = field(repr=False)
    payer: str
    max_total: int
    expires_at: int
    models: List[str]
    #: What this client has been charged through it, base units.
    spent: int = 0

    @property
    def remaining(self) -> int:
        return max(0, self.max_total - self.spent)

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires_at

    def covers(self, model: str) -> bool:
        """Whether a call of ``model`` (``name``, ``name@version`` or ``sha256:...``) may be paid
        from this session; the node has the last word for content ids."""
        if not self.models:
            return True
        name = model.split("@", 1)[0]
        return model.startswith("sha256:") or name in self.models or model in self.models


def _normalise_node(node: str) -> str:
    node = node.strip().rstrip("/")
    if "://" not in node:
        node = "http://" + node
    return node


class Client:
    """A verinet node's API.

    ``node``: its URL (``http://127.0.0.1:8080``; ``127.0.0.1:8080`` works too).
    ``wallet``: an eth_account ``LocalAccount`` or a private key (``0x`` hex); needed to pay, open
    sessions and publish. ``spend_limit``: the most this client may ever pay in total, in
    token units (``"0.5"``); a payment that would go past it is refused before anything is
    signed (:class:`~verinet.SpendLimitExceeded`). ``app``: an app id to tag every call with.

    Amounts a person types are token units (``"0.001"``, ``Decimal``, ``int``; or
    :class:`~verinet.BaseUnits` for base units); amounts the client returns (``price``,
    ``spent``, balances) are integer base units, shown with :meth:`format_amount`.
    """

    def __init__(
        self,
        node: str,
        wallet: Any = None,
        spend_limit: Optional[Amount] = None,
        app: Optional[str] = None,
        *,
        timeout: float = 60.0,
        upload_timeout: float = 1800.0,
    ) -> None:
        self.node = _normalise_node(node)
        self.wallet = crypto.load_wallet(wallet)
        self.app = app
        self.upload_timeout = upload_timeout
        self._http = httpx.Client(base_url=self.node, timeout=timeout)
        self._lock = threading.Lock()
        self._spend_limit_typed = spend_limit
        self._spend_limit: Optional[int] = None
        self._spent = 0
        self._inflight = 0
        self._sessions: List[Session] = []
        self.session: Optional[Session] = None
        self._token: Optional[Dict[str, Any]] = None
        self._chain_id: Optional[int] = None

    # -- plumbing ---------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        who = self.wallet.address if self.wallet is not None else "no wallet"
        return f"Client({self.node!r}, {who})"

    @property
    def address(self) -> Optional[str]:
        """The wallet's address, if there is a wallet."""
        return self.wallet.address if self.wallet is not None else None

    def _send(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            return self._http.request(method, path, **kw)
        except httpx.TransportError as e:
            raise ConnectionFailed(
                None,
                "connection_failed",
                f"cannot reach the node at {self.node} ({type(e).__name__}: {e}); is it running? (verinet up)",
            ) from e

    @staticmethod
    def _error(resp: httpx.Response) -> VerinetError:
        text = resp.text
        code, message, kind, body = "http_error", text or resp.reason_phrase, "", text
        try:
            body = resp.json()
            err = body.get("error") if isinstance(body, dict) else None
            if isinstance(err, dict):
                code = str(err.get("code") or code)
                message = str(err.get("message") or message)
                kind = str(err.get("type") or "")
        except ValueError:
            pass
        cls = error_class(resp.status_code, code)
        headers = {k.lower(): v for k, v in resp.headers.items()}
        if issubclass(cls, PaymentRequired):
            amount, required = None, None
            header = resp.headers.get(x402.PAYMENT_REQUIRED)
            if header:
                try:
                    required = x402.decode_header(header)
                    amount = int(x402.pick_exact(required)["amount"])
                except (ValueError, KeyError, TypeError):
                    pass
            return cls(resp.status_code, code, message, kind=kind, body=body, headers=headers, amount=amount, requirements=required)
        return cls(resp.status_code, code, message, kind=kind, body=body, headers=headers)

    def _json(self, resp: httpx.Response) -> Any:
        if resp.status_code >= 400:
            raise self._error(resp)
        return resp.json()

    def _get(self, path: str, **kw: Any) -> Any:
        return self._json(self._send("GET", path, **kw))

    def _post(self, path: str, body: Any, **kw: Any) -> Any:
        return self._json(self._send("POST", path, json=body, **kw))

    def _need_wallet(self, what: str) -> Any:
        if self.wallet is None:
            raise VerinetError(None, "no_wallet", f"{what} needs a wallet: Client(node, wallet=LocalAccount or private key)")
        return self.wallet

    # -- the token and amounts --------------------------------------------------------------

    def health(self) -> Dict[str, Any]:
        """``GET /health``."""
        return self._get("/health")

    @property
    def token(self) -> Dict[str, Any]:
        """``{"symbol", "decimals"}`` of the node's token: ``token`` of ``GET /health`` when the
        node gives it, else 18 decimals and ``VRN``. Read once."""
        if self._token is None:
            info = self.health().get("token")
            token = {"symbol": DEFAULT_SYMBOL, "decimals": DEFAULT_DECIMALS}
            if isinstance(info, dict):
                if isinstance(info.get("decimals"), int):
                    token["decimals"] = info["decimals"]
                if isinstance(info.get("symbol"), str) and info["symbol"]:
                    token["symbol"] = info["symbol"]
                token = {**info, **token}
            self._token = token
        return self._token

    @property
    def decimals(self) -> int:
        return int(self.token["decimals"])

    @property
    def symbol(self) -> str:
        return str(self.token["symbol"])

    def to_base_units(self, amount: Amount) -> int:
        """Token units (``"0.001"``) to base units with the node's decimals."""
        return to_base_units(amount, self.decimals, self.symbol)

    def to_tokens(self, base: Union[int, str]) -> Decimal:
        """Base units (an int or the API's string) to token units, exactly."""
        return from_base_units(base, self.decimals)

    def format_amount(self, base: Union[int, str]) -> str:
        """Base units for a person: ``"0.00143 VRN"``."""
        return format_amount(base, self.decimals, self.symbol)

    @property
    def chain_id(self) -> int:
        """The node's EIP-712 chain id (``token.chain_id`` of ``GET /health``, else from
        ``GET /x402/supported``)."""
        if self._chain_id is None and isinstance(self.token.get("chain_id"), int):
            self._chain_id = int(self.token["chain_id"])
        if self._chain_id is None:
            kinds = self._get("/x402/supported").get("kinds") or []
            nets = [k.get("network") for k in kinds if str(k.get("network", "")).startswith("eip155:")]
            if not nets:
                raise VerinetError(None, "no_chain_id", f"/x402/supported names no eip155 network: {kinds}")
            self._chain_id = x402.chain_id_of(nets[0])
        return self._chain_id

    # -- spending ---------------------------------------------------------------------------

    @property
    def spend_limit(self) -> Optional[int]:
        """The spend limit in base units (``None``: no limit)."""
        if self._spend_limit is None and self._spend_limit_typed is not None:
            self._spend_limit = self.to_base_units(self._spend_limit_typed)
        return self._spend_limit

    @property
    def spent(self) -> int:
        """What this client has been charged so far (x402 and sessions), base units."""
        return self._spent

    def _committed_locked(self) -> int:
        """Spent, plus payments in flight, plus what open sessions may still take."""
        sessions = sum(s.remaining for s in self._sessions if not s.expired)
        return self._spent + self._inflight + sessions

    def _reserve(self, amount: int, what: str, requirements: Any = None) -> None:
        limit = self.spend_limit
        with self._lock:
            if limit is not None:
                committed = self._committed_locked()
                if committed + amount > limit:
                    raise SpendLimitExceeded(
                        f"{what} asks {self.format_amount(amount)}; spent and committed "
                        f"{self.format_amount(committed)} of the limit {self.format_amount(limit)}",
                        amount=amount,
                        spent=self._spent,
                        limit=limit,
                        requirements=requirements,
                    )
            self._inflight += amount

    def _settle(self, reserved: int, charged: int) -> None:
        with self._lock:
            self._inflight -= reserved
            self._spent += charged

    # -- inference --------------------------------------------------------------------------

    def infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        verification: Optional[str] = None,
        *,
        sample_rate: Optional[float] = None,
        app: Optional[str] = None,
        output_encoding: str = "b64",
        pay: bool = True,
    ) -> InferResult:
        """Runs ``model`` (``name``, ``name@version`` or ``sha256:<hex>``) on ``inputs`` (numpy
        arrays, or anything ``numpy.asarray`` takes, by input name) and returns the outputs as
        numpy arrays.

        A priced call is paid: from the open session when it covers the model, else by x402
        (the node's 402 is answered with an EIP-3009 authorization signed by the wallet, within
        the spend limit). ``verification``: ``None``/``"none"``, ``"sampled"`` (with
        ``sample_rate``) or ``"quorum"``. ``output_encoding="b64"`` (the default) has the node
        send the outputs' exact bytes; ``"data"`` sends JSON numbers. ``pay=False`` raises
        :class:`~verinet.PaymentRequired` instead of paying."""
        arrays = {str(k): as_array(v) for k, v in inputs.items()}
        body: Dict[str, Any] = {"model": model, "inputs": {k: to_json(a) for k, a in arrays.items()}}
        if verification is not None:
            body["verification"] = verification
        if sample_rate is not None:
            body["sample_rate"] = sample_rate
        if app or self.app:
            body["app"] = app or self.app
        if output_encoding != "data":
            body["output_encoding"] = output_encoding

        session = self._session_for(model) if pay else None
        headers = {"authorization": f"Bearer {session.token}"} if session else {}
        resp = self._send("POST", "/v1/infer", json=body, headers=headers)
        settlement = None
        if resp.status_code == 402 and session is None and pay and resp.headers.get(x402.PAYMENT_REQUIRED):
            resp, settlement = self._pay_x402(body, resp)
        doc = self._json(resp)
        result = self._result(doc, arrays, settlement)
        if session is not None and result.payment and result.payment.get("method") == "session":
            charged = int(result.payment.get("amount", 0))
            with self._lock:
                session.spent += charged
                self._spent += charged
        return result

    def _pay_x402(self, body: Dict[str, Any], resp: httpx.Response):
        required = x402.decode_header(resp.headers[x402.PAYMENT_REQUIRED])
        try:
            accepted = x402.pick_exact(required)
        except ValueError as e:
            raise self._error(resp) from e
        if self.wallet is None:
            raise self._error(resp)
        amount = int(accepted["amount"])
        self._reserve(amount, f"{body['model']}", required)
        charged = 0
        try:
            payload = x402.sign_payment(self.wallet, accepted, required.get("resource"))
            header = x402.encode_header(payload)
            paid = self._send_paid(body, header)
            if paid.status_code < 400:
                try:
                    payment = paid.json().get("payment") or {}
                    charged = int(payment.get("amount", amount))
                except ValueError:
                    charged = amount
            settlement = None
            if paid.headers.get(x402.PAYMENT_RESPONSE):
                try:
                    settlement = x402.decode_header(paid.headers[x402.PAYMENT_RESPONSE])
                except ValueError:
                    settlement = None
            return paid, settlement
        except ConnectionFailed:
            # The node may have captured it: count it, so the limit still holds.
            charged = amount
            raise
        finally:
            self._settle(amount, charged)

    def _send_paid(self, body: Dict[str, Any], header: str) -> httpx.Response:
        """POSTs the paid request. A dropped connection is retried with the same header (the
        node answers a captured payment's retry with the kept answer and charges nothing
        again); ``payment_in_flight`` (409) is waited out."""
        headers = {x402.PAYMENT_SIGNATURE: header}
        failures = 0
        deadline = time.monotonic() + 120
        while True:
            try:
                resp = self._http.post("/v1/infer", json=body, headers=headers)
            except httpx.TransportError as e:
                failures += 1
                if failures > 2:
                    raise ConnectionFailed(
                        None,
                        "connection_failed",
                        f"the paid request to {self.node} got no answer ({e}); the payment may have been "
                        "captured: sending the same payment again returns its answer",
                    ) from e
                time.sleep(0.2 * failures)
                continue
            if resp.status_code == 409 and time.monotonic() < deadline:
                try:
                    code = resp.json()["error"]["code"]
                except (ValueError, KeyError, TypeError):
                    code = ""
                if code == "payment_in_flight":
                    time.sleep(float(resp.headers.get("retry-after", "1") or 1))
                    continue
            return resp

    def _result(self, doc: Dict[str, Any], inputs: Dict[str, np.ndarray], settlement: Any) -> InferResult:
        outputs = {name: from_json(t) for name, t in (doc.get("outputs") or {}).items()}
        return InferResult(
            request_id=doc.get("request_id", ""),
            model=doc.get("model") or {},
            outputs=outputs,
            price=int(doc.get("price") or 0),
            verification=doc.get("verification", "none"),
            payment=doc.get("payment"),
            receipt=doc.get("receipt"),
            check=doc.get("check"),
            timings_ms=doc.get("timings_ms") or {},
            settlement=settlement,
            inputs=inputs,
            raw=doc,
        )

    # -- sessions ---------------------------------------------------------------------------

    def _session_for(self, model: str) -> Optional[Session]:
        s = self.session
        if s is not None and not s.expired and s.covers(model):
            return s
        return None

    def open_session(
        self,
        budget: Amount,
        models: Optional[Iterable[str]] = None,
        expires_in: float = 3600,
        *,
        expiry: Optional[int] = None,
    ) -> Session:
        """Signs a spending cap of ``budget`` (token units) for ``models`` (names or
        ``sha256:`` ids; none: any), valid ``expires_in`` seconds (or until the unix time
        ``expiry``), exchanges it for a bearer token (``POST /v1/sessions``) and makes it the
        client's session: calls of the models it covers are paid from it instead of by x402.
        The whole budget counts against the spend limit while the session is open."""
        wallet = self._need_wallet("a spending session")
        max_total = self.to_base_units(budget)
        names = list(models or [])
        exp = int(expiry) if expiry is not None else int(time.time() + expires_in)
        self._reserve(max_total, "the session budget")
        try:
            nonce = os.urandom(32)
            typed = crypto.session_typed_data(wallet.address, max_total, exp, names, nonce, self.chain_id)
            body = {
                "payer": wallet.address,
                "max_total": str(max_total),
                "expiry": exp,
                "models": names,
                "nonce": crypto.to_hex(nonce),
                "signature": crypto.sign_typed(wallet, typed),
            }
            info = self._post("/v1/sessions", body)
            session = Session(
                id=info["id"],
                token=info["token"],
                payer=info.get("payer", wallet.address),
                max_total=int(info.get("max_total", max_total)),
                expires_at=int(info.get("expires_at", exp)),
                models=list(info.get("models", names)),
            )
            with self._lock:
                self._sessions.append(session)
                self.session = session
            return session
        finally:
            # The reservation becomes the session's remaining budget (or nothing on failure).
            self._settle(max_total, 0)

    def close_session(self) -> None:
        """Stops paying from the current session (calls go back to x402). Its unspent budget
        keeps counting against the spend limit until it expires, since its token still works."""
        self.session = None

    # -- hub --------------------------------------------------------------------------------

    def publish(
        self,
        path: Union[str, "os.PathLike[str]", bytes],
        name: str,
        version: str,
        price: Amount = "0",
        description: str = "",
        tags: Iterable[str] = (),
        license: str = "",
        *,
        verification: Optional[Mapping[str, float]] = None,
        kind: Optional[str] = None,
    ) -> Dict[str, Any]:
        """Publishes a model file (or its bytes) as ``name@version`` with a creator royalty of
        ``price`` token units per call, signed by the wallet (EIP-191 over name, version,
        sha256 and time, docs/api.md "Publishing"). Returns the version's record."""
        wallet = self._need_wallet("publishing")
        if isinstance(path, (bytes, bytearray)):
            data: Optional[bytes] = bytes(path)
            digest = hashlib.sha256(data).hexdigest()
        else:
            data = None
            h = hashlib.sha256()
            with open(path, "rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            digest = h.hexdigest()
        sha = f"sha256:{digest}"
        timestamp = int(time.time())
        message = f"verinet model publish\nname: {name}\nversion: {version}\nsha256: {sha}\ntimestamp: {timestamp}"
        signature = crypto.to_hex(wallet.sign_message(encode_defunct(text=message)).signature)
        meta: Dict[str, Any] = {
            "name": name,
            "version": str(version),
            "description": description,
            "tags": list(tags),
            "license": license,
            "price": str(self.to_base_units(price)),
            "owner": wallet.address,
            "timestamp": timestamp,
            "signature": signature,
            "sha256": sha,
        }
        if verification is not None:
            meta["verification"] = dict(verification)
        if kind is not None:
            meta["kind"] = kind
        meta_json = json.dumps(meta)
        # The bytes given, or the file streamed (never read whole).
        with contextlib.nullcontext(data) if data is not None else open(path, "rb") as model:
            return self._json(
                self._send(
                    "POST",
                    "/v1/models",
                    files=[
                        ("metadata", (None, meta_json, "application/json")),
                        ("model", ("model.onnx", model, "application/octet-stream")),
                    ],
                    timeout=httpx.Timeout(self.upload_timeout),
                )
            )

    def model(self, name: str, version: Optional[str] = None) -> Dict[str, Any]:
        """``GET /v1/models/{name}[/{version}]``."""
        return self._get(f"/v1/models/{name}" + (f"/{version}" if version else ""))

    def models(self, q: Optional[str] = None, tag: Optional[str] = None, sort: Optional[str] = None, limit: Optional[int] = None) -> List[Dict[str, Any]]:
        """``GET /v1/models``: the hub's entries."""
        params = {k: v for k, v in {"q": q, "tag": tag, "sort": sort, "limit": limit}.items() if v is not None}
        return list(self._get("/v1/models", params=params).get("data") or [])

    # -- money ------------------------------------------------------------------------------

    def faucet(self, amount: Optional[Amount] = None, address: Optional[str] = None) -> Dict[str, Any]:
        """Devnet money: mints ``amount`` token units (default: the node's drip) to the wallet
        (or ``address``). Returns the node's answer (``transaction``, ``amount``, ``account``)."""
        to = address or self._need_wallet("the faucet (or pass address=)").address
        body: Dict[str, Any] = {"address": to_checksum_address(to)}
        if amount is not None:
            body["amount"] = str(self.to_base_units(amount))
        return self._post("/v1/faucet", body)

    def balance(self, address: Optional[str] = None) -> Balance:
        """``GET /v1/accounts/{address}`` (the wallet's by default), in base units."""
        who = address or self._need_wallet("a balance (or pass address=)").address
        a = self._get(f"/v1/accounts/{to_checksum_address(who)}")
        return Balance(
            address=a.get("address", who),
            available=int(a.get("balance", 0)),
            escrow=int(a.get("escrow", 0)),
            stake=int(a.get("stake", 0)),
            earnings={k: int(v) for k, v in (a.get("earnings") or {}).items()},
            spent=int(a.get("spent", 0)),
            raw=a,
        )

    def payment(self, request_id: str) -> Dict[str, Any]:
        """``GET /v1/payments/{request_id}``."""
        return self._get(f"/v1/payments/{request_id}")

    # -- receipts ---------------------------------------------------------------------------

    def receipt(self, request_id: str) -> Dict[str, Any]:
        """``GET /v1/receipts/{request_id}``: the signed receipt and its status."""
        return self._get(f"/v1/receipts/{request_id}")

    def proof(
        self,
        receipt_or_request_id: Any,
        *,
        wait: float = 15.0,
        poll: float = 0.25,
        expected_signer: Optional[str] = None,
        strict: bool = False,
    ) -> ProofResult:
        """Fetches ``GET /v1/receipts/{id}/proof`` and checks it offline with
        :func:`verinet.verify_proof`: the StandardMerkleTree leaf of the receipt's digest, the
        path to the batch root, the batch signature, and (given a result or receipt rather than
        an id) that the proof is for that receipt. A receipt not sealed yet is waited for up to
        ``wait`` seconds (:class:`~verinet.ReceiptPending` after that)."""
        receipt: Any = None
        if isinstance(receipt_or_request_id, str):
            rid = receipt_or_request_id
        else:
            receipt = receipt_or_request_id
            rid = getattr(receipt, "request_id", None)
            if rid is None and isinstance(receipt, Mapping):
                body = receipt.get("receipt")
                rid = receipt.get("request_id") or (body.get("request_id") if isinstance(body, Mapping) else None)
            if not rid:
                raise ValueError("proof() takes a request id, an InferResult, a response or a signed receipt")
        deadline = time.monotonic() + wait
        while True:
            try:
                body = self._get(f"/v1/receipts/{rid}/proof")
                break
            except ReceiptPending:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(poll)
        return verify_proof(body, receipt, expected_signer, strict=strict)
