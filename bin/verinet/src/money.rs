//! `verinet wallet balance`, `verinet faucet`, `verinet app register|show`, `verinet session
//! create`, and how amounts are shown: in tokens with the node's symbol (`1.5 vUSD`), while
//! `--json` keeps the API's base units.

use std::time::{SystemTime, UNIX_EPOCH};

use alloy_primitives::Address;
use alloy_signer::SignerSync;
use anyhow::Context;
use verinet_client::Client;
use verinet_primitives::{
    TOKEN_DECIMALS, format_amount, parse_amount,
    wire::{AccountInfo, AppInfo, AppRegistration},
};

use crate::cli::{AppLsArgs, AppRegisterArgs, AppShowArgs, BalanceArgs, FaucetArgs, SessionCreateArgs, TransferArgs, WalletArgs};

/// How a node's amounts read: its token's symbol and decimals (`/health`).
pub struct Units {
    symbol: String,
    decimals: u32,
}

impl Units {
    /// The node's units; the ledger's defaults if it does not say (an older node).
    pub async fn of(client: &Client) -> Self {
        match client.health().await.ok().and_then(|h| h.token) {
            Some(t) => Self { symbol: t.symbol, decimals: t.decimals },
            None => Self { symbol: "vUSD".into(), decimals: TOKEN_DECIMALS },
        }
    }

    /// A base-unit amount as `1.5 vUSD`; text that is not an amount is shown as it is.
    pub fn show(&self, base_units: &str) -> String {
        match base_units.parse::<u128>() {
            Ok(v) => format!("{} {}", format_amount(v, self.decimals), self.symbol),
            Err(_) => base_units.to_owned(),
        }
    }
}

/// An amount a person typed, in tokens (`1.5`, `0.001`), as base units (clap value parser).
pub fn parse_tokens(s: &str) -> Result<u128, String> {
    parse_amount(s, TOKEN_DECIMALS).map_err(|e| format!("{e}; amounts are in tokens, e.g. 0.001"))
}

fn account_of(address: &Option<String>, wallet: &WalletArgs) -> anyhow::Result<Address> {
    match address {
        Some(a) => a.parse().with_context(|| format!("{a:?} is not an address")),
        None => Ok(crate::wallet::load(wallet)?.address()),
    }
}

fn print_account(a: &AccountInfo, u: &Units) {
    println!("address    {}", a.address);
    println!("available  {}", u.show(&a.balance));
    println!("escrow     {}  (held for calls in flight)", u.show(&a.escrow));
    println!("stake      {}", u.show(&a.stake));
    for (role, amount) in &a.earnings {
        println!("earned     {} as {role}", u.show(amount));
    }
    println!("spent      {}", u.show(&a.spent));
}

pub async fn balance(a: BalanceArgs) -> anyhow::Result<()> {
    let address = account_of(&a.address, &a.wallet)?;
    let client = Client::new(&a.node.node);
    let info = client.account(address).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        print_account(&info, &Units::of(&client).await);
    }
    Ok(())
}

pub async fn transfer(a: TransferArgs) -> anyhow::Result<()> {
    let to: Address = a.to.parse().with_context(|| format!("--to {:?} is not an address", a.to))?;
    let key = crate::wallet::load(&a.wallet)?;
    let client = Client::new(&a.node.node);
    let t = client.transfer(key.signer(), to, a.amount).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&t)?);
        return Ok(());
    }
    let u = Units::of(&client).await;
    println!("sent {} to {} (tx {})", u.show(&t.amount), t.to, t.tx);
    print_account(&t.account, &u);
    Ok(())
}

pub async fn faucet(a: FaucetArgs) -> anyhow::Result<()> {
    let address = account_of(&a.address, &a.wallet)?;
    let client = Client::new(&a.node.node);
    let r = client.faucet(address, a.amount).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let u = Units::of(&client).await;
    println!("minted {} (tx {})", u.show(&r.amount), r.transaction);
    print_account(&r.account, &u);
    Ok(())
}

pub async fn app_register(a: AppRegisterArgs) -> anyhow::Result<()> {
    let key = crate::wallet::load(&a.wallet)?;
    let mut reg = AppRegistration {
        name: a.name,
        owner: key.address(),
        markup: a.markup.to_string(),
        timestamp: SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs(),
        signature: String::new(),
    };
    let sig = key.signer().sign_message_sync(reg.message().as_bytes())?;
    reg.signature = format!("0x{}", hex::encode(sig.as_bytes()));
    let client = Client::new(&a.node.node);
    let app = client.register_app(&reg).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&app)?);
        return Ok(());
    }
    print_app(&app, &Units::of(&client).await);
    println!("tag requests with: verinet infer MODEL --input FILE --app {}", app.id);
    Ok(())
}

fn print_app(app: &AppInfo, u: &Units) {
    println!("app      {}", app.id);
    println!("name     {}", app.name);
    println!("owner    {}", app.owner);
    println!("markup   {} per call", u.show(&app.markup));
}

pub async fn app_show(a: AppShowArgs) -> anyhow::Result<()> {
    let client = Client::new(&a.node.node);
    let app = client.app(&a.id).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&app)?);
    } else {
        print_app(&app, &Units::of(&client).await);
    }
    Ok(())
}

pub async fn app_ls(a: AppLsArgs) -> anyhow::Result<()> {
    let owner = account_of(&a.owner, &a.wallet)?;
    let client = Client::new(&a.node.node);
    let apps = client.apps(owner).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&serde_json::json!({"apps": apps}))?);
        return Ok(());
    }
    if apps.is_empty() {
        println!("no apps owned by {owner}: register one with `verinet app register NAME`");
        return Ok(());
    }
    let u = Units::of(&client).await;
    let rows: Vec<Vec<String>> = apps.iter().map(|app| vec![app.id.clone(), app.name.clone(), u.show(&app.markup)]).collect();
    crate::output::table(&["ID", "NAME", "MARKUP"], &rows);
    Ok(())
}

pub async fn session_create(a: SessionCreateArgs) -> anyhow::Result<()> {
    let key = crate::wallet::load(&a.wallet)?;
    let client = Client::new(&a.node.node);
    let s = client.open_session_signed(key.signer(), a.budget, a.models, a.expires_in).await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    let u = Units::of(&client).await;
    println!("session  {}", s.id);
    println!("budget   {}", u.show(&s.max_total));
    println!("expires  {} (unix s)", s.expires_at);
    println!("models   {}", if s.models.is_empty() { "any".to_owned() } else { s.models.join(", ") });
    println!("token    {}", s.token);
    println!("(shown once) pay with it: curl -H 'Authorization: Bearer {}' ...", s.token);
    Ok(())
}
