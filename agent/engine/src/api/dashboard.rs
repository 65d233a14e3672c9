//! The read-only dashboard: server-rendered HTML at `/dashboard`, refreshed every 5 s (polling by
//! `<meta http-equiv="refresh">`; no script). Per treasury the balances, prices and weights and
//! each budget's use in its current window (from the newest snapshot the pipeline read), the
//! signer nodes' and the root's health, and the latest intents with their states and transactions.
//!
//! # Security
//! Behind the API's token: a request with the bearer header is served; a browser signs in once at
//! `/dashboard/login` with the token (a form double-submitting a random value in its own cookie),
//! and gets a random session id in an `HttpOnly`, `SameSite=Strict` cookie scoped to `/dashboard`,
//! kept in memory for 8 hours. The token never appears in a URL. Nothing on the dashboard changes
//! anything.
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use alloy::primitives::utils::format_units;
use axum::Router;
use axum::extract::{Form, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use subtle::ConstantTimeEq;
use treasury_chain::snapshot::Snapshot;

use super::Shared;
use crate::journal::IntentFilter;

const SESSION_COOKIE: &str = "treasury_dashboard";
const LOGIN_COOKIE: &str = "treasury_dashboard_login";
const SESSION_TTL: Duration = Duration::from_secs(8 * 3600);

/// Signed-in dashboard sessions (id → expiry).
#[derive(Default)]
pub struct Sessions(Mutex<HashMap<String, Instant>>);

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sessions(<redacted>)")
    }
}

/// A random 256-bit value, hex.
fn random_hex() -> String {
    treasury_signer::root::config::new_token().0.to_string()
}

impl Sessions {
    fn key(id: &str) -> String {
        id.to_owned()
    }

    fn valid(&self, id: &str) -> bool {
        let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        map.retain(|_, exp| *exp > now);
        map.contains_key(&Self::key(id))
    }

    fn open(&self) -> String {
        let id = random_hex();
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(Self::key(&id), Instant::now() + SESSION_TTL);
        id
    }
}

/// The dashboard's routes (the API's authentication middleware lets `/dashboard…` through to
/// them: they check the token or the session themselves).
pub fn router() -> Router<Shared> {
    Router::new().route("/dashboard", get(page)).route("/dashboard/login", get(login_form).post(login))
}

fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn signed_in(s: &Shared, headers: &HeaderMap) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| s.token.matches(t.trim()));
    bearer || cookie(headers, SESSION_COOKIE).is_some_and(|id| s.dashboard.valid(id))
}

fn html(status: StatusCode, body: String) -> Response {
    let mut resp = (status, body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    resp
}

fn esc(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;background:#f4f5f7;color:#1d2330}\
header{background:#1d2330;color:#fff;padding:12px 24px}main{padding:12px 24px;max-width:1200px}\
.card{background:#fff;border:1px solid #d8dbe2;border-radius:6px;padding:12px 18px;margin:12px 0}\
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #e3e5ea;padding:5px 8px;text-align:left;font-size:14px}\
th{background:#f0f1f4}.num{text-align:right;font-variant-numeric:tabular-nums}.up{color:#1a7f37}.down{color:#a4262c}\
.bar{background:#e3e5ea;border-radius:3px;height:10px;width:160px;display:inline-block}.fill{background:#2f6fdb;height:10px;border-radius:3px}\
.mono{font-family:monospace;font-size:12px}";

fn layout(body: &str, refresh: bool) -> String {
    let meta = if refresh { "<meta http-equiv=\"refresh\" content=\"5\">" } else { "" };
    format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">{meta}<title>treasury dashboard</title><style>{STYLE}</style></head><body><header><b>treasury · dashboard</b> (read-only; refreshes every 5 s)</header><main>{body}</main></body></html>"
    )
}

fn login_page(status: StatusCode, error: Option<&str>) -> Response {
    let nonce = random_hex();
    let error = error.map(|e| format!("<p class=\"down\" id=\"error\">{}</p>", esc(e))).unwrap_or_default();
    let body = format!(
        "<div class=\"card\"><h2>Sign in</h2>{error}<form method=\"post\" action=\"/dashboard/login\"><input type=\"hidden\" name=\"csrf\" value=\"{nonce}\"><p><label>API token<br><input type=\"password\" name=\"token\" id=\"token\" size=\"70\"></label></p><p><button id=\"sign-in\">Sign in</button></p></form></div>"
    );
    let mut resp = html(status, layout(&body, false));
    let c = format!("{LOGIN_COOKIE}={nonce}; HttpOnly; SameSite=Strict; Path=/dashboard/login");
    resp.headers_mut().append(header::SET_COOKIE, HeaderValue::from_str(&c).expect("ascii cookie"));
    resp
}

async fn login_form() -> Response {
    login_page(StatusCode::OK, None)
}

#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
    #[serde(default)]
    csrf: String,
}

async fn login(State(s): State<Shared>, headers: HeaderMap, Form(form): Form<LoginForm>) -> Response {
    let nonce = cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if form.csrf.is_empty() || !bool::from(form.csrf.as_bytes().ct_eq(nonce.as_bytes())) {
        return login_page(StatusCode::FORBIDDEN, Some("The sign-in form expired or was forged: try again."));
    }
    if !s.token.matches(form.token.trim()) {
        tracing::info!("dashboard: sign-in refused (wrong token)");
        return login_page(StatusCode::UNAUTHORIZED, Some("Wrong token."));
    }
    let id = s.dashboard.open();
    let c = format!(
        "{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/dashboard; Max-Age={}",
        SESSION_TTL.as_secs()
    );
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, "/dashboard")]).into_response();
    resp.headers_mut().append(header::SET_COOKIE, HeaderValue::from_str(&c).expect("ascii cookie"));
    resp
}

/// A number with thousands separators and `places` decimals.
fn grouped(v: f64, places: usize) -> String {
    let text = format!("{:.*}", places, v.abs());
    let (whole, frac) = text.split_once('.').map_or((text.as_str(), ""), |(w, f)| (w, f));
    let mut out = String::new();
    for (i, c) in whole.chars().enumerate() {
        if i > 0 && (whole.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    let sign = if v < 0.0 { "-" } else { "" };
    if frac.is_empty() { format!("{sign}{out}") } else { format!("{sign}{out}.{frac}") }
}

fn units(v: alloy::primitives::U256, decimals: u8) -> f64 {
    format_units(v, decimals).ok().and_then(|t| t.parse().ok()).unwrap_or(f64::NAN)
}

/// A budget period in words (`1 day`, `7 days`, `3600 s`).
fn period(secs: u64) -> String {
    match secs {
        s if s.is_multiple_of(86_400) => format!("{} day{}", s / 86_400, if s == 86_400 { "" } else { "s" }),
        s if s.is_multiple_of(3600) => format!("{} h", s / 3600),
        s => format!("{s} s"),
    }
}

/// Block explorers of well-known chains, for transaction links.
fn explorer(chain_id: u64) -> Option<&'static str> {
    Some(match chain_id {
        1 => "https://etherscan.io",
        11_155_111 => "https://sepolia.etherscan.io",
        10 => "https://optimistic.etherscan.io",
        8453 => "https://basescan.org",
        42_161 => "https://arbiscan.io",
        137 => "https://polygonscan.com",
        _ => return None,
    })
}

fn treasury_card(snap: &Snapshot) -> String {
    let price = |a: &treasury_chain::snapshot::AssetState| -> Option<f64> {
        let p = a.price.as_ref()?;
        let answer: f64 = p.answer.to_string().parse().ok()?;
        Some(answer / 10f64.powi(i32::from(p.decimals)))
    };
    let values: Vec<Option<f64>> =
        snap.assets.iter().map(|a| price(a).map(|p| p * units(a.balance, a.decimals))).collect();
    let total: f64 = values.iter().flatten().sum();
    let mut out = format!(
        "<div class=\"card treasury\" id=\"treasury-{safe}\"><h2>Treasury <span class=\"mono\">{safe}</span></h2><p>module <span class=\"mono\">{module}</span> · block {block} · nonce {nonce}{paused} · total <b id=\"total-value\">${total}</b></p>\
         <h3>Balances and weights</h3><table class=\"balances\"><tr><th>asset</th><th class=\"num\">balance</th><th class=\"num\">price (USD)</th><th class=\"num\">value (USD)</th><th class=\"num\">weight</th></tr>",
        safe = snap.safe,
        module = snap.module,
        block = snap.block_number,
        nonce = snap.module_nonce,
        paused = if snap.paused { " · <b class=\"down\">PAUSED</b>" } else { "" },
        total = grouped(total, 2),
    );
    for (a, value) in snap.assets.iter().zip(&values) {
        let p = price(a);
        let stale = a.price.as_ref().is_some_and(|p| p.stale);
        let _ = write!(
            out,
            "<tr id=\"asset-{sym}\"><td>{sym}</td><td class=\"num\">{bal}</td><td class=\"num\">{price}{stale}</td><td class=\"num\">{value}</td><td class=\"num\">{weight}</td></tr>",
            sym = esc(&a.symbol),
            bal = grouped(units(a.balance, a.decimals), 4),
            price = p.map(|p| grouped(p, 2)).unwrap_or_else(|| "—".into()),
            stale = if stale { " <span class=\"down\">stale</span>" } else { "" },
            value = value.map(|v| grouped(v, 2)).unwrap_or_else(|| "—".into()),
            weight = match value {
                Some(v) if total > 0.0 => format!("{:.1} %", v / total * 100.0),
                _ => "—".into(),
            },
        );
    }
    out.push_str("</table><h3>Budgets (current window)</h3><table class=\"budgets\"><tr><th>asset</th><th class=\"num\">spent</th><th class=\"num\">limit</th><th class=\"num\">remaining</th><th>used</th><th class=\"num\">period</th></tr>");
    for a in &snap.assets {
        let Some(b) = a.budget.as_ref().filter(|b| b.period_secs != 0) else { continue };
        let (spent, limit) = (units(b.spent, a.decimals), units(b.limit, a.decimals));
        let used = if limit > 0.0 { (spent / limit * 100.0).clamp(0.0, 100.0) } else { 100.0 };
        let _ = write!(
            out,
            "<tr id=\"budget-{sym}\"><td>{sym}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td class=\"num\">{}</td><td><span class=\"bar\"><span class=\"fill\" style=\"display:block;width:{used:.0}%\"></span></span> {used:.1} %</td><td class=\"num\">{}</td></tr>",
            grouped(spent, 2),
            grouped(limit, 2),
            grouped(units(b.remaining, a.decimals), 2),
            period(b.period_secs),
            sym = esc(&a.symbol),
        );
    }
    out.push_str("</table></div>");
    out
}

async fn page(State(s): State<Shared>, headers: HeaderMap) -> Response {
    if !signed_in(&s, &headers) {
        return (StatusCode::SEE_OTHER, [(header::LOCATION, "/dashboard/login")]).into_response();
    }
    let mut body = String::new();
    let snapshots = s.metrics.snapshots();
    if snapshots.is_empty() {
        body.push_str("<div class=\"card\" id=\"no-snapshot\">No snapshot yet: the pipeline has not read the chain since it started.</div>");
    }
    for snap in &snapshots {
        body.push_str(&treasury_card(snap));
    }
    // Health of the signer nodes and the root.
    let gauges = s.metrics.gauges();
    body.push_str(
        "<div class=\"card\" id=\"health\"><h2>Signers</h2><table><tr><th>signer</th><th>state</th></tr>",
    );
    for (node, up) in &gauges.signers {
        let _ = write!(
            body,
            "<tr><td>{}</td><td class=\"{}\">{}</td></tr>",
            esc(node),
            if *up { "up" } else { "down" },
            if *up { "up" } else { "down" }
        );
    }
    if gauges.signers.is_empty() {
        body.push_str("<tr><td colspan=\"2\">no node looked at yet</td></tr>");
    }
    let root = match &s.root {
        None => "<td>root</td><td>not configured</td>".to_string(),
        Some(client) => match tokio::time::timeout(Duration::from_secs(2), client.health()).await {
            Ok(Ok(h)) if h.hsm_connected => "<td>root</td><td class=\"up\">up, HSM connected</td>".into(),
            Ok(Ok(_)) => "<td>root</td><td class=\"down\">up, HSM not connected</td>".into(),
            Ok(Err(e)) => {
                format!("<td>root</td><td class=\"down\">{}</td>", esc(&treasury_signer::error_chain(&e)))
            }
            Err(_) => "<td>root</td><td class=\"down\">no answer within 2 s</td>".into(),
        },
    };
    let _ = write!(body, "<tr id=\"root-health\">{root}</tr></table>");
    if let Some((keeper, wei)) = gauges.keeper {
        let _ = write!(
            body,
            "<p>keeper <span class=\"mono\">{keeper}</span>: {} ETH for gas</p>",
            grouped(units(alloy::primitives::U256::from(wei), 18), 4)
        );
    }
    body.push_str("</div>");
    // The latest intents.
    body.push_str("<div class=\"card\"><h2>Intents</h2><table id=\"intents\"><tr><th>#</th><th>policy</th><th>kind</th><th>what</th><th>state</th><th>transaction</th></tr>");
    let filter = IntentFilter { limit: Some(30), ..Default::default() };
    let intents = match s.journal.list(&filter).await {
        Ok(l) => l,
        Err(e) => {
            let _ = write!(body, "<tr><td colspan=\"6\" class=\"down\">{}</td></tr>", esc(&e.to_string()));
            Vec::new()
        }
    };
    for i in intents {
        let tx = match s.journal.operation_of(i.id).await {
            Ok(Some(op)) => {
                s.journal.latest_transaction(&op.operation_id).await.ok().flatten().map(|t| t.tx.tx_hash)
            }
            _ => None,
        };
        let tx = match (tx, explorer(s.status.chain_id)) {
            (Some(h), Some(base)) => {
                format!("<a class=\"mono\" href=\"{base}/tx/{h}\" rel=\"noreferrer\">{h}</a>")
            }
            (Some(h), None) => format!("<span class=\"mono\">{h}</span>"),
            (None, _) => String::new(),
        };
        let what = i.payload.get("intent").map(describe).unwrap_or_default();
        let _ = write!(
            body,
            "<tr id=\"intent-{id}\"><td>{id}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"state\">{}</td><td>{tx}</td></tr>",
            esc(&i.policy),
            esc(&i.kind),
            esc(&what),
            i.state.as_str(),
            id = i.id.0,
        );
    }
    body.push_str("</table></div>");
    html(StatusCode::OK, layout(&body, true))
}

/// An intent's action in words (`30000 GOV → grantee`, `swap 1.5 ETH for USDC`).
fn describe(intent: &serde_json::Value) -> String {
    let t = |k: &str| intent.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
    match intent.get("kind").and_then(|k| k.as_str()) {
        Some("pay") => format!("{} {} → {}", t("amount"), t("token"), t("to")),
        Some("swap") => format!("swap {} {} for {}", t("amount"), t("sell"), t("buy")),
        Some("alert") => format!("alert: {}", t("message")),
        Some(other) => other.to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(grouped(1_234_567.891, 2), "1,234,567.89");
        assert_eq!(grouped(0.5, 4), "0.5000");
        assert_eq!(grouped(-1000.0, 0), "-1,000");
    }
}
