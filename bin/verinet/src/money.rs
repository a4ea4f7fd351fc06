//! `verinet wallet balance`, `verinet faucet`, `verinet app register|show`.

use std::time::{SystemTime, UNIX_EPOCH};

use alloy_primitives::Address;
use alloy_signer::SignerSync;
use anyhow::Context;
use verinet_client::Client;
use verinet_primitives::wire::{AccountInfo, AppRegistration};

use crate::cli::{AppRegisterArgs, AppShowArgs, BalanceArgs, FaucetArgs, WalletArgs};

fn account_of(address: &Option<String>, wallet: &WalletArgs) -> anyhow::Result<Address> {
    match address {
        Some(a) => a.parse().with_context(|| format!("{a:?} is not an address")),
        None => Ok(crate::wallet::load(wallet)?.address()),
    }
}

fn print_account(a: &AccountInfo) {
    println!("address  {}", a.address);
    println!("balance  {}", a.balance);
    println!("escrow   {}", a.escrow);
    println!("stake    {}", a.stake);
    for (role, amount) in &a.earnings {
        println!("earned   {amount} as {role}");
    }
}

pub async fn balance(a: BalanceArgs) -> anyhow::Result<()> {
    let address = account_of(&a.address, &a.wallet)?;
    let info = Client::new(&a.node.node).account(address).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        print_account(&info);
    }
    Ok(())
}

pub async fn faucet(a: FaucetArgs) -> anyhow::Result<()> {
    let address = account_of(&a.address, &a.wallet)?;
    let r = Client::new(&a.node.node).faucet(address, a.amount).await?;
    println!("minted {} (tx {})", r.amount, r.transaction);
    print_account(&r.account);
    Ok(())
}

pub async fn app_register(a: AppRegisterArgs) -> anyhow::Result<()> {
    let key = crate::wallet::load(&a.wallet)?;
    let mut reg = AppRegistration {
        name: a.name,
        owner: key.address(),
        markup: a.markup,
        timestamp: SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
        signature: String::new(),
    };
    let sig = key.signer().sign_message_sync(reg.message().as_bytes())?;
    reg.signature = format!("0x{}", hex::encode(sig.as_bytes()));
    let app = Client::new(&a.node.node).register_app(&reg).await?;
    println!("app {}  name {}  owner {}  markup {}", app.id, app.name, app.owner, app.markup);
    println!("tag requests with: verinet infer MODEL --input FILE --app {}", app.id);
    Ok(())
}

pub async fn app_show(a: AppShowArgs) -> anyhow::Result<()> {
    let app = Client::new(&a.node.node).app(&a.id).await?;
    println!("{}", serde_json::to_string_pretty(&app)?);
    Ok(())
}
