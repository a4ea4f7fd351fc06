"""The SDK against a real node (VERINET_NODE_URL): publish, faucet, paid inference with
automatic x402 payment, the spend limit, sessions, offline verification, inclusion proofs and
typed errors. Every signature is a real one made by eth_account."""

from __future__ import annotations

import copy
import json
import secrets

import numpy as np
import pytest
from eth_account import Account

import verinet
from verinet.verify import verify_proof

from conftest import CountingWallet, digits_copy


def price_of(priced_model) -> int:
    """What one call costs in mode none (royalty + the node's fees), from the publish answer."""
    return int(priced_model["info"]["price"]["total"])


# -- publishing, faucet, amounts --------------------------------------------------------------


def test_publish_signs_and_uploads_with_a_human_price(node_url, priced_model):
    info, creator = priced_model["info"], priced_model["creator"]
    client = verinet.Client(node_url)
    import hashlib

    sha = "sha256:" + hashlib.sha256(priced_model["path"].read_bytes()).hexdigest()
    assert (info["name"], info["version"], info["sha256"]) == (priced_model["name"], "1.0.0", sha)
    assert info["owner"].lower() == creator.address.lower()
    assert int(info["price"]["royalty"]) == client.to_base_units("0.001") == 10 ** (client.decimals - 3)
    assert (info["tags"], info["license"]) == (["sdk", "digits"], "MIT")
    # The hub shows it too.
    detail = client.model(priced_model["name"])
    assert detail["latest"]["sha256"] == sha


def test_publish_refusals_carry_their_codes(node_url, priced_model):
    name = priced_model["name"]
    # The same version again: 409 version_exists.
    with pytest.raises(verinet.Conflict) as e:
        priced_model["client"].publish(digits_copy(name + "-again"), name, "1.0.0")
    assert (e.value.status, e.value.code) == (409, "version_exists")
    # The name belongs to its first publisher: 403 not_owner for anyone else.
    other = verinet.Client(node_url, Account.create())
    with pytest.raises(verinet.PermissionDenied) as e:
        other.publish(digits_copy(name + "-other"), name, "2.0.0")
    assert (e.value.status, e.value.code) == (403, "not_owner")
    # A bad name: 422 invalid_metadata.
    with pytest.raises(verinet.InvalidInput) as e:
        other.publish(digits_copy("bad-name"), "Bad Name!", "1.0.0")
    assert (e.value.status, e.value.code) == (422, "invalid_metadata")
    # Publishing needs a wallet.
    with pytest.raises(verinet.VerinetError) as e:
        verinet.Client(node_url).publish(digits_copy("x"), "x", "1.0.0")
    assert e.value.code == "no_wallet"


def test_faucet_and_balance_in_base_units_shown_in_tokens(node_url):
    client = verinet.Client(node_url, Account.create())
    assert client.balance().available == 0
    answer = client.faucet("2.5")
    assert int(answer["amount"]) == client.to_base_units("2.5")
    b = client.balance()
    assert (b.available, b.escrow, b.stake) == (client.to_base_units("2.5"), 0, 0)
    assert client.format_amount(b.available) == f"2.5 {client.symbol}"
    assert client.to_tokens(b.available) == verinet.amounts.Decimal("2.5")
    # The default drip.
    client.faucet()
    assert client.balance().available > client.to_base_units("2.5")
    # Token units with more decimals than the token has are refused before any request.
    with pytest.raises(ValueError):
        client.faucet("0." + "0" * client.decimals + "1")


def test_token_comes_from_health_or_the_defaults(node_url):
    client = verinet.Client(node_url)
    token = client.health().get("token")
    if isinstance(token, dict) and "decimals" in token:
        assert client.decimals == token["decimals"]
        assert client.symbol == token.get("symbol", "VRN")
    else:
        assert (client.decimals, client.symbol) == (18, "VRN")


# -- paid inference ---------------------------------------------------------------------------


def test_paid_infer_pays_automatically_and_matches_the_reference(node_url, priced_model, funded, sample, reference):
    wallet = CountingWallet(funded)
    client = verinet.Client(node_url, wallet, spend_limit="1")
    before = client.balance().available
    creator_before = client.balance(priced_model["creator"].address).earnings.get("creator", 0)

    result = client.infer(priced_model["name"], sample)

    price = price_of(priced_model)
    assert wallet.signed == 1, "one EIP-3009 authorization"
    assert result.price == price
    assert result.payment["method"] == "x402"
    assert result.payment["payer"].lower() == funded.address.lower()
    assert int(result.payment["amount"]) == price
    assert result.settlement["success"] is True and int(result.settlement["amount"]) == price
    assert client.spent == price
    assert client.balance().available == before - price
    royalty = int(priced_model["info"]["price"]["royalty"])
    assert client.balance(priced_model["creator"].address).earnings.get("creator", 0) == creator_before + royalty
    # The numbers: onnxruntime's reference outputs for the same sample.
    np.testing.assert_array_equal(sample["pixels"].ravel(), np.array(reference["_inputs"]["pixels"]["data"], np.float32))
    assert result.outputs["label"].dtype == np.int64
    np.testing.assert_array_equal(result.outputs["label"], reference["label"])
    assert result.outputs["probabilities"].dtype == np.float32
    assert result.outputs["probabilities"].shape == (1, 10)
    np.testing.assert_allclose(result.outputs["probabilities"], reference["probabilities"], atol=1e-5)
    assert result.model["name"] == priced_model["name"]
    assert result.request_id and result.receipt["receipt"]["request_id"] == result.request_id


def test_outputs_are_the_same_as_json_numbers_or_bytes(node_url, sample):
    client = verinet.Client(node_url, Account.create())
    client.faucet("1")
    a = client.infer("digits", sample, output_encoding="data")
    b = client.infer("digits", sample)
    assert "data" in a.raw["outputs"]["probabilities"] and "b64" in b.raw["outputs"]["probabilities"]
    for name in a.outputs:
        assert a.outputs[name].dtype == b.outputs[name].dtype
        np.testing.assert_array_equal(a.outputs[name], b.outputs[name])


def test_verification_modes_are_passed_through(node_url, priced_model, funded, sample):
    client = verinet.Client(node_url, funded)
    sampled = client.infer(priced_model["name"], sample, verification="sampled", sample_rate=1.0)
    assert sampled.verification == "sampled"
    assert sampled.check["status"] == "passed", sampled.check
    assert verinet.verify(sampled).ok
    quorum = client.infer(priced_model["name"], sample, verification="quorum")
    assert quorum.verification == "quorum" and quorum.check["status"] == "quorum"
    assert verinet.verify(quorum).ok
    assert client.spent == sampled.price + quorum.price


def test_without_a_wallet_a_priced_call_raises_payment_required_with_the_price(node_url, priced_model, sample):
    client = verinet.Client(node_url)
    with pytest.raises(verinet.PaymentRequired) as e:
        client.infer(priced_model["name"], sample)
    assert (e.value.status, e.value.code) == (402, "payment_required")
    assert e.value.amount == price_of(priced_model)
    assert e.value.requirements["x402Version"] == 2


def test_a_payer_without_money_gets_insufficient_funds_and_spends_nothing(node_url, priced_model, sample):
    client = verinet.Client(node_url, Account.create())
    with pytest.raises(verinet.InsufficientFunds) as e:
        client.infer(priced_model["name"], sample)
    assert (e.value.status, e.value.code) == (402, "insufficient_funds")
    assert client.spent == 0


# -- the spend limit --------------------------------------------------------------------------


def test_the_spend_limit_refuses_before_signing(node_url, priced_model, funded, sample):
    price = price_of(priced_model)
    wallet = CountingWallet(funded)
    # Room for one call and a half.
    client = verinet.Client(node_url, wallet, spend_limit=verinet.BaseUnits(price + price // 2))
    client.infer(priced_model["name"], sample)
    assert (client.spent, wallet.signed) == (price, 1)
    balance = client.balance().available

    with pytest.raises(verinet.SpendLimitExceeded) as e:
        client.infer(priced_model["name"], sample)
    err = e.value
    assert isinstance(err, verinet.PaymentRequired)
    assert (err.code, err.amount, err.spent, err.limit) == ("spend_limit_exceeded", price, price, price + price // 2)
    assert wallet.signed == 1, "nothing signed for the refused call"
    assert client.spent == price
    assert client.balance().available == balance

    # A limit in token units below one call refuses the first one.
    tight = verinet.Client(node_url, CountingWallet(funded), spend_limit=client.to_tokens(price - 1))
    with pytest.raises(verinet.SpendLimitExceeded):
        tight.infer(priced_model["name"], sample)
    assert tight.wallet.signed == 0 and tight.spent == 0


# -- sessions ---------------------------------------------------------------------------------


def test_a_session_pays_by_bearer_token_within_its_budget(node_url, priced_model, funded, sample):
    price = price_of(priced_model)
    wallet = CountingWallet(funded)
    client = verinet.Client(node_url, wallet, spend_limit="1")
    before = client.balance().available
    session = client.open_session(client.to_tokens(2 * price), models=[priced_model["name"]], expires_in=600)
    assert wallet.signed == 1, "one EIP-712 SpendingSession"
    assert (session.max_total, session.models) == (2 * price, [priced_model["name"]])
    assert session.payer.lower() == funded.address.lower()

    for _ in range(2):
        r = client.infer(priced_model["name"], sample)
        assert r.payment["method"] == "session" and int(r.payment["amount"]) == price
        assert verinet.verify(r).ok
    assert wallet.signed == 1, "no per-call signature"
    assert (session.spent, client.spent) == (2 * price, 2 * price)

    with pytest.raises(verinet.BudgetExceeded) as e:
        client.infer(priced_model["name"], sample)
    assert (e.value.status, e.value.code) == (402, "budget_exceeded")
    assert client.balance().available == before - 2 * price

    # A model the session does not cover is paid (or not) as usual, not from the session.
    other = client.infer("digits", sample)
    assert other.payment is None or other.payment["method"] == "x402"

    # Closing it goes back to x402.
    client.close_session()
    r = client.infer(priced_model["name"], sample)
    assert r.payment["method"] == "x402"


def test_a_session_budget_counts_against_the_spend_limit(node_url, funded):
    wallet = CountingWallet(funded)
    client = verinet.Client(node_url, wallet, spend_limit="0.5")
    with pytest.raises(verinet.SpendLimitExceeded):
        client.open_session("0.6")
    assert wallet.signed == 0
    client.open_session("0.4", expires_in=60)
    with pytest.raises(verinet.SpendLimitExceeded):
        client.open_session("0.2")
    assert wallet.signed == 1


def test_an_unknown_session_token_is_session_invalid(node_url, priced_model, funded, sample):
    client = verinet.Client(node_url, funded)
    client.session = verinet.Session(id="ses-x", token="vn_" + "0" * 64, payer=funded.address, max_total=10**30, expires_at=2**40, models=[])
    with pytest.raises(verinet.SessionInvalid) as e:
        client.infer(priced_model["name"], sample)
    assert (e.value.status, e.value.code) == (401, "session_invalid")


# -- offline verification ---------------------------------------------------------------------


@pytest.fixture
def paid_result(node_url, priced_model, funded, sample):
    client = verinet.Client(node_url, funded)
    return client.infer(priced_model["name"], sample)


def test_verify_passes_on_a_real_answer(paid_result, funded):
    v = verinet.verify(paid_result)
    assert v.ok, str(v)
    node = paid_result.receipt["receipt"]["node"]
    assert v.signer.lower() == node.lower()
    for name in ("digest", "signature", "request_id", "model_hash", "output_hash", "input_hash", "price", "payer", "mode"):
        assert v.check(name) is not None and v.check(name).ok, (name, str(v))
    assert verinet.verify(paid_result, expected_signer=node).ok
    assert paid_result.verify(strict=True).ok
    # The JSON as the node sent it verifies too (inputs passed explicitly).
    v = verinet.verify(paid_result.raw, inputs=paid_result.inputs)
    assert v.ok and v.check("input_hash").ok
    # A receipt alone: digest and signer.
    v = verinet.verify(paid_result.receipt)
    assert v.ok and v.signer.lower() == node.lower()


def test_verify_works_on_a_saved_response_file(node_url, sample, tmp_path):
    client = verinet.Client(node_url, Account.create())
    client.faucet("1")
    r = client.infer("digits", sample, output_encoding="data")
    path = tmp_path / "answer.json"
    path.write_text(json.dumps(r.raw))
    v = verinet.verify(str(path))
    assert v.ok, str(v)
    assert any("input_hash" in n for n in v.not_checked)


def test_verify_fails_when_an_output_is_tampered_with(node_url, paid_result, sample):
    bad = copy.deepcopy(paid_result)
    bad.outputs["probabilities"][0, 0] += np.float32(1e-3)
    v = verinet.verify(bad)
    assert not v.ok
    assert [c.name for c in v.failed] == ["output_hash"]
    with pytest.raises(verinet.VerificationFailed) as e:
        verinet.verify(bad, strict=True)
    assert e.value.result.check("output_hash").ok is False

    # In the raw JSON (numbers form): one value changed.
    client = verinet.Client(node_url, Account.create())
    client.faucet("1")
    raw = copy.deepcopy(client.infer("digits", sample, output_encoding="data").raw)
    assert verinet.verify(raw).ok
    raw["outputs"]["label"]["data"][0] = (raw["outputs"]["label"]["data"][0] + 1) % 10
    v = verinet.verify(raw)
    assert not v.ok and not v.check("output_hash").ok


def test_verify_fails_when_the_signature_or_a_signed_field_is_tampered_with(paid_result):
    node = paid_result.receipt["receipt"]["node"]
    bad = copy.deepcopy(paid_result.raw)
    sig = bytearray.fromhex(bad["receipt"]["signature"][2:])
    sig[10] ^= 0x01
    bad["receipt"]["signature"] = "0x" + sig.hex()
    v = verinet.verify(bad, expected_signer=node)
    assert not v.ok
    assert not v.check("signature").ok
    assert not v.check("expected_signer").ok
    assert v.check("digest").ok

    # A field changed after signing: the digest no longer matches.
    bad = copy.deepcopy(paid_result.raw)
    bad["receipt"]["receipt"]["price"] = "1"
    v = verinet.verify(bad)
    assert not v.check("digest").ok and not v.ok

    # Another signer than expected.
    v = verinet.verify(paid_result, expected_signer=Account.create().address)
    assert not v.ok and [c.name for c in v.failed] == ["expected_signer"]

    # Inputs other than the ones sent.
    v = verinet.verify(paid_result.raw, inputs={"pixels": np.zeros((1, 64), np.float32)})
    assert not v.ok and [c.name for c in v.failed] == ["input_hash"]


# -- inclusion proofs -------------------------------------------------------------------------


def test_proof_verifies_against_the_signed_batch_root(node_url, paid_result):
    client = verinet.Client(node_url)
    p = client.proof(paid_result, wait=60)
    assert p.ok, str(p)
    for name in ("leaf_encoding", "leaf", "root", "batch_signature", "request_id", "digest", "receipt_fields"):
        assert p.check(name).ok, (name, str(p))
    assert p.proof["digest"].lower() == paid_result.receipt["digest"].lower()
    assert p.batch_signer.lower() == p.batch["node"].lower()
    assert client.proof(paid_result, expected_signer=p.batch["node"]).ok
    # By request id (sealed already).
    assert client.proof(paid_result.request_id).ok

    # Tampered proofs fail offline.
    bad = copy.deepcopy(p.proof)
    bad["digest"] = "0x" + "07" * 32
    v = verify_proof(bad)
    assert not v.ok and not v.check("leaf").ok
    bad = copy.deepcopy(p.proof)
    bad["leaf"] = "0x" + "07" * 32
    assert not verify_proof(bad).ok
    bad = copy.deepcopy(p.proof)
    bad["batch"]["root"] = "0x" + "07" * 32
    v = verify_proof(bad)
    assert not v.check("root").ok and not v.check("batch_signature").ok
    bad = copy.deepcopy(p.proof)
    bad["batch"]["size"] = int(bad["batch"]["size"]) + 1
    v = verify_proof(bad)
    assert v.check("root").ok and not v.check("batch_signature").ok
    # A proof of another receipt.
    other = copy.deepcopy(paid_result.raw)
    other["receipt"]["receipt"]["request_id"] = "another"
    v = verify_proof(p.proof, other)
    assert not v.check("request_id").ok and not v.check("receipt_fields").ok
    with pytest.raises(verinet.VerificationFailed):
        verify_proof(bad, strict=True)


# -- errors -----------------------------------------------------------------------------------


def test_errors_carry_the_node_codes(node_url, sample, priced_model):
    client = verinet.Client(node_url, Account.create())
    with pytest.raises(verinet.NotFound) as e:
        client.infer(f"no-such-model-{secrets.token_hex(3)}", sample)
    assert (e.value.status, e.value.code, e.value.type) == (404, "not_found", "not_found_error")

    with pytest.raises(verinet.InvalidInput) as e:
        client.infer("digits", {"pixels": np.zeros((1, 63), np.float32)})
    assert (e.value.status, e.value.code) == (422, "input_mismatch")
    assert "pixels" in e.value.message

    with pytest.raises(verinet.InvalidInput) as e:
        client.infer("digits", {"pixels": np.zeros((1, 64), np.float64)})
    assert e.value.code == "input_mismatch"

    with pytest.raises(verinet.InvalidInput) as e:
        client.infer("Not A Model Ref!", sample)
    assert (e.value.status, e.value.code) == (400, "invalid_model_ref")

    with pytest.raises(verinet.NotFound) as e:
        verinet.Client(node_url, Account.create(), app="app-nope").infer(priced_model["name"], sample)
    assert e.value.code == "unknown_app"

    with pytest.raises(verinet.NotFound) as e:
        client.proof("no-such-request", wait=0)
    assert (e.value.status, e.value.code) == (404, "not_found")

    with pytest.raises(verinet.ConnectionFailed) as e:
        verinet.Client("http://127.0.0.1:9", timeout=2).health()
    assert e.value.code == "connection_failed" and e.value.status is None


def test_a_pending_receipt_is_receipt_pending_without_waiting(node_url, sample):
    client = verinet.Client(node_url, Account.create())
    client.faucet("1")
    r = client.infer("digits", sample)
    try:
        p = client.proof(r, wait=0)
    except verinet.ReceiptPending as e:
        assert (e.status, e.code) == (404, "receipt_pending")
    else:
        # Sealed already (a fast batch interval): then it must verify.
        assert p.ok
