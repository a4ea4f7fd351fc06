//! `verinet receipt verify FILE`: an offline check of a node's signed receipt.

use anyhow::Context;
use verinet_primitives::{Address, wire::SignedReceipt};

use crate::cli::ReceiptVerifyArgs;

pub fn verify(a: ReceiptVerifyArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    let mut doc: serde_json::Value = serde_json::from_str(&text).context("not JSON")?;
    // A saved `infer --json` response carries the receipt in its "receipt" field.
    if doc.get("outputs").is_some() {
        doc = doc.get_mut("receipt").map(serde_json::Value::take).context("the response has no receipt")?;
    }
    let signed: SignedReceipt = serde_json::from_value(doc).context("not a verinet receipt")?;
    let signer = verinet_verify::verify_receipt(&signed).context("INVALID receipt")?;
    if let Some(expected) = &a.node {
        let expected: Address = expected.parse().with_context(|| format!("{expected:?} is not an address"))?;
        anyhow::ensure!(signer == expected, "INVALID: signed by {signer}, not by {expected}");
    }
    let r = &signed.receipt;
    println!("valid receipt signed by {signer} (chain {})", signed.chain_id);
    println!("request {}  mode {}  price {}  payer {}  at {} ms", r.request_id, r.mode, r.price, r.payer, r.timestamp);
    println!("model  sha256:{}", hex::encode(r.model_hash));
    println!("input  {:#x}\noutput {:#x}\ndigest {:#x}", r.input_hash, r.output_hash, signed.digest);
    Ok(())
}
