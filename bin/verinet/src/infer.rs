//! `verinet infer MODEL --input FILE|JSON|-`.

use std::io::Read;

use anyhow::Context;
use verinet_client::{Client, ClientError};
use verinet_primitives::{TensorMap, wire::InferRequest};

use crate::{cli::InferArgs, money::Units, output};

pub async fn run(a: InferArgs) -> anyhow::Result<()> {
    let inputs = read_inputs(&a.input)?;
    let client = Client::new(&a.node.node);
    let req = InferRequest {
        app: a.app,
        verification: a.verification,
        sample_rate: a.sample_rate,
        ..InferRequest::new(a.model, inputs)
    };
    let units = Units::of(&client).await;
    let resp = if a.pay {
        let key = crate::wallet::load(&a.wallet)?;
        client.infer_paid(&req, key.signer()).await?.0
    } else {
        match client.infer(&req).await {
            Err(ClientError::Api { status: 402, message, .. }) => {
                anyhow::bail!("{message}\n(pay with the wallet: add --pay; devnet money: `verinet faucet`)")
            }
            other => other?,
        }
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&resp)?);
        return Ok(());
    }
    println!("{}@{}  {}", resp.model.name, resp.model.version, resp.model.sha256);
    let t = &resp.timings_ms;
    println!(
        "request {}  price {}  load {:.2} ms  queue {:.2} ms  compute {:.2} ms  total {:.2} ms",
        resp.request_id,
        units.show(&resp.price),
        t.load,
        t.queue,
        t.compute,
        t.total
    );
    if let Some(p) = &resp.payment {
        println!("paid {} by {} ({}), settled in {}", units.show(&p.amount), p.payer, p.method, p.settle_tx);
    }
    if let Some(c) = &resp.check {
        println!("verification {}: {}", resp.verification.as_str(), c.status);
    }
    output::print_tensors(&resp.tensors()?);
    Ok(())
}

/// Inline JSON when it looks like JSON, `-` for stdin, else a file; accepts `{"inputs": {...}}`
/// too. Tensors are `{"dtype","shape","data"}` or bare (nested) lists.
fn read_inputs(arg: &str) -> anyhow::Result<TensorMap> {
    let text = if arg == "-" {
        let mut s = String::new();
        std::io::stdin().read_to_string(&mut s).context("cannot read inputs from stdin")?;
        s
    } else if arg.trim_start().starts_with('{') {
        arg.to_owned()
    } else {
        std::fs::read_to_string(arg).with_context(|| format!("cannot read input file {arg}"))?
    };
    let mut v: serde_json::Value = serde_json::from_str(&text).context("inputs are not valid JSON")?;
    if let Some(inner) = v.get_mut("inputs") {
        v = inner.take();
    }
    serde_json::from_value(v).context("inputs must map names to tensors: {\"dtype\",\"shape\",\"data\"} or a (nested) list")
}
