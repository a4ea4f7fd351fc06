//! Signed receipts: the node's EIP-712 statement of what it computed for whom.

use alloy_primitives::{Address, B256, U256};
use alloy_signer_local::PrivateKeySigner;
use alloy_sol_types::{Eip712Domain, SolStruct, sol};
use verinet_primitives::wire::{ReceiptBody, SignedReceipt};

use crate::VerifyError;

sol! {
    /// The EIP-712 message a node signs for every result.
    #[derive(Debug)]
    struct Receipt {
        string requestId;
        bytes32 modelHash;
        bytes32 inputHash;
        bytes32 outputHash;
        address node;
        string mode;
        uint256 price;
        address payer;
        uint64 timestamp;
    }

    /// The EIP-712 message a node signs for a completion (LLM) call: the receipt's fields,
    /// `inputHash`/`outputHash` over prompt and output token ids, then the generation terms.
    #[derive(Debug)]
    struct CompletionReceipt {
        string requestId;
        bytes32 modelHash;
        bytes32 inputHash;
        bytes32 outputHash;
        address node;
        string mode;
        uint256 price;
        address payer;
        uint64 timestamp;
        uint32 promptTokens;
        uint32 completionTokens;
        string temperature;
        string topP;
        uint64 seed;
        uint32 maxTokens;
        string[] stop;
        string finishReason;
    }
}

/// The domain receipts are signed in.
pub fn receipt_domain(chain_id: u64) -> Eip712Domain {
    Eip712Domain::new(Some("verinet".into()), Some("1".into()), Some(U256::from(chain_id)), None, None)
}

/// The EIP-712 signing hash of a receipt body.
pub fn receipt_hash(body: &ReceiptBody, chain_id: u64) -> Result<B256, VerifyError> {
    {
        let this = body;
        let price = U256::from_str_radix(&this.price, 10)
            .map_err(|e| VerifyError::Malformed(format!("price {:?}: {e}", this.price)))?;
        let domain = receipt_domain(chain_id);
        if let Some(c) = &this.completion {
            let message = CompletionReceipt {
                requestId: this.request_id.clone(),
                modelHash: this.model_hash,
                inputHash: this.input_hash,
                outputHash: this.output_hash,
                node: this.node,
                mode: this.mode.clone(),
                price,
                payer: this.payer,
                timestamp: this.timestamp,
                promptTokens: c.prompt_tokens,
                completionTokens: c.completion_tokens,
                temperature: c.temperature.clone(),
                topP: c.top_p.clone(),
                seed: c.seed,
                maxTokens: c.max_tokens,
                stop: c.stop.clone(),
                finishReason: c.finish_reason.clone(),
            };
            return Ok(message.eip712_signing_hash(&domain));
        }
        let message = Receipt {
            requestId: this.request_id.clone(),
            modelHash: this.model_hash,
            inputHash: this.input_hash,
            outputHash: this.output_hash,
            node: this.node,
            mode: this.mode.clone(),
            price,
            payer: this.payer,
            timestamp: this.timestamp,
        };
        Ok(message.eip712_signing_hash(&domain))
    }
}

/// Signs a receipt with the node key (which must be the node the receipt names).
pub fn sign_receipt(body: ReceiptBody, key: &PrivateKeySigner, chain_id: u64) -> Result<SignedReceipt, VerifyError> {
    if key.address() != body.node {
        return Err(VerifyError::WrongSigner { got: key.address(), expected: body.node });
    }
    let digest = receipt_hash(&body, chain_id)?;
    // libsecp256k1: the same deterministic signature alloy's k256 makes, several times faster.
    let secret: [u8; 32] = key.credential().to_bytes().into();
    let sig = verinet_primitives::secp::sign_prehash(&secret, &digest).map_err(VerifyError::Malformed)?;
    Ok(SignedReceipt { receipt: body, chain_id, digest, signature: format!("0x{}", hex::encode(sig)) })
}

/// Checks a receipt offline: the digest is the EIP-712 hash of the body, and the signature
/// recovers the node it names. Returns the signer.
pub fn verify_receipt(r: &SignedReceipt) -> Result<Address, VerifyError> {
    let digest = receipt_hash(&r.receipt, r.chain_id)?;
    if digest != r.digest {
        return Err(VerifyError::DigestMismatch { got: r.digest, expected: digest });
    }
    let signer = verinet_primitives::secp::recover_hex(&r.signature, &digest).map_err(VerifyError::BadSignature)?;
    if signer != r.receipt.node {
        return Err(VerifyError::WrongSigner { got: signer, expected: r.receipt.node });
    }
    Ok(signer)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libsecp256k1_signs_the_bytes_alloy_signs() {
        use alloy_signer::SignerSync;
        for i in 0..64u8 {
            let key = PrivateKeySigner::random();
            let digest = alloy_primitives::keccak256([i, 7]);
            let want = key.sign_hash_sync(&digest).unwrap().as_bytes();
            let secret: [u8; 32] = key.credential().to_bytes().into();
            let got = verinet_primitives::secp::sign_prehash(&secret, &digest).unwrap();
            assert_eq!(got, want, "key {} digest {digest}", key.address());
            assert_eq!(verinet_primitives::secp::recover_address(&got, &digest).unwrap(), key.address());
        }
    }

    fn body(node: Address) -> ReceiptBody {
        ReceiptBody {
            request_id: "9f00".into(),
            model_hash: B256::repeat_byte(1),
            input_hash: B256::repeat_byte(2),
            output_hash: B256::repeat_byte(3),
            node,
            mode: "none".into(),
            price: "1430".into(),
            payer: Address::repeat_byte(4),
            timestamp: 1_764_000_000_000,
            completion: None,
        }
    }

    #[test]
    fn signs_verifies_and_catches_every_tampering() {
        let key = PrivateKeySigner::random();
        let signed = sign_receipt(body(key.address()), &key, 31337).unwrap();
        assert_eq!(verify_receipt(&signed).unwrap(), key.address());
        let json = serde_json::to_string(&signed).unwrap();
        assert_eq!(verify_receipt(&serde_json::from_str::<SignedReceipt>(&json).unwrap()).unwrap(), key.address());

        let mut t = signed.clone();
        t.receipt.output_hash = B256::repeat_byte(9);
        assert!(matches!(verify_receipt(&t), Err(VerifyError::DigestMismatch { .. })));
        // Digest recomputed by a forger: the signature no longer recovers the node.
        t.digest = receipt_hash(&t.receipt, 31337).unwrap();
        assert!(matches!(verify_receipt(&t), Err(VerifyError::WrongSigner { .. })));
        let mut t = signed.clone();
        t.chain_id = 1;
        assert!(verify_receipt(&t).is_err());
        // A completion receipt is another EIP-712 type: its terms are signed too.
        let mut c = body(key.address());
        c.completion = Some(verinet_primitives::wire::CompletionTerms {
            prompt_tokens: 20,
            completion_tokens: 8,
            temperature: "0.7".into(),
            top_p: "1".into(),
            seed: 42,
            max_tokens: 8,
            stop: vec!["\n".into()],
            finish_reason: "length".into(),
        });
        let signed_c = sign_receipt(c, &key, 31337).unwrap();
        assert_ne!(signed_c.digest, signed.digest);
        assert_eq!(verify_receipt(&signed_c).unwrap(), key.address());
        type Edit = fn(&mut verinet_primitives::wire::CompletionTerms);
        let edits: [Edit; 4] = [
            |t| t.seed = 43,
            |t| t.completion_tokens = 7,
            |t| t.temperature = "0.70".into(),
            |t| t.stop.clear(),
        ];
        for edit in edits {
            let mut t = signed_c.clone();
            edit(t.receipt.completion.as_mut().unwrap());
            assert!(matches!(verify_receipt(&t), Err(VerifyError::DigestMismatch { .. })));
        }
        let other = PrivateKeySigner::random();
        assert!(matches!(sign_receipt(body(key.address()), &other, 31337), Err(VerifyError::WrongSigner { .. })));
    }
}
