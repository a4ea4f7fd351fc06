"""verinet: a Python SDK for verinet nodes (verifiable pay-per-inference).

    import numpy as np, verinet
    client = verinet.Client("http://127.0.0.1:8080", wallet="0x<private key>", spend_limit="1")
    result = client.infer("digits", {"pixels": np.zeros((1, 64), np.float32)})
    print(result.outputs["label"], client.format_amount(result.price))
    assert verinet.verify(result).ok          # offline: hashes, EIP-712 digest, signer
    assert client.proof(result).ok            # inclusion in the node-signed Merkle batch

See docs/sdk.md in the verinet repository.
"""

from .amounts import BaseUnits, format_amount, from_base_units, to_base_units
from .client import Balance, Client, InferResult, Session
from .errors import (
    AuthenticationError,
    BudgetExceeded,
    Conflict,
    ConnectionFailed,
    ExecutionFailed,
    InsufficientFunds,
    InvalidInput,
    NotFound,
    PaymentRequired,
    PermissionDenied,
    ReceiptPending,
    ServerError,
    SessionInvalid,
    SpendLimitExceeded,
    Unavailable,
    VerificationFailed,
    VerinetError,
)
from .tensors import tensors_hash
from .verify import Check, ProofResult, VerifyResult, verify, verify_proof

__version__ = "0.1.0"

__all__ = [
    "AuthenticationError",
    "Balance",
    "BaseUnits",
    "BudgetExceeded",
    "Check",
    "Client",
    "Conflict",
    "ConnectionFailed",
    "ExecutionFailed",
    "InferResult",
    "InsufficientFunds",
    "InvalidInput",
    "NotFound",
    "PaymentRequired",
    "PermissionDenied",
    "ProofResult",
    "ReceiptPending",
    "ServerError",
    "Session",
    "SessionInvalid",
    "SpendLimitExceeded",
    "Unavailable",
    "VerificationFailed",
    "VerifyResult",
    "VerinetError",
    "format_amount",
    "from_base_units",
    "tensors_hash",
    "to_base_units",
    "verify",
    "verify_proof",
]
