//! The demo scenario: the chain is moved forward so the daily and monthly policies fire, the
//! ETH price moves (oracle and pool) so the rebalance fires, and a manual grant over the tier-1
//! budget escalates to the HSM root, which the operator approves (or `--yes` does).

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::{Address, I256, U256};
use alloy::providers::Provider;
use anyhow::{Context, bail};
use treasury_chain::contracts::{
    IUniswapV2Factory, IUniswapV2Pair, IUniswapV2Router02, PriceFeed, TestToken,
};
use treasury_signer::root::client::RootClient;
use treasury_signer::root::store::RequestState;

use super::config::{ESCALATED_POLICY, REBALANCE_EVERY};
use super::setup::Running;
use super::view::{Progress, Shared};
use crate::cmd::trigger::AgentApi;
use treasury_agent::journal::{Intent, IntentFilter, IntentState, Journal};
use treasury_agent::trigger::CURSOR_SOURCE;

/// How long one scenario step may take before it is reported as failed, when nobody is asked
/// anything (with a prompt, the operator may take their time; Ctrl-C stops a stuck run).
const STEP_TIMEOUT: Duration = Duration::from_secs(180);
/// The ETH price the scenario moves to (USD, 8 decimals): above the de-risk floor of 2,500.
const ETH_PRICE_E8: i64 = 3_900 * 100_000_000;

/// How the escalated payment is decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Approval {
    /// Approve without asking (`--yes`, `--once`).
    Auto,
    /// Ask at the terminal.
    Ask,
}

/// Drives the scenario against a running set-up and agent.
#[derive(Debug)]
pub struct Scenario<'a> {
    r: &'a Running,
    api: AgentApi,
    journal: Journal,
    shared: Arc<Shared>,
    approval: Approval,
    pace: Duration,
}

impl<'a> Scenario<'a> {
    /// A scenario over `r`, reading the agent's journal; `pace` is a pause before each step so a
    /// person watching the live view can follow (zero with `--once`).
    pub fn new(
        r: &'a Running,
        api: AgentApi,
        journal: Journal,
        shared: Arc<Shared>,
        approval: Approval,
        pace: Duration,
    ) -> Self {
        Self { r, api, journal, shared, approval, pace }
    }

    /// Runs every step, recording each in `progress` (steps are shown by the live view).
    pub async fn run(&self, progress: &mut Progress) -> anyhow::Result<()> {
        self.step(progress, "agent watching the chain", self.wait_for_agent()).await?;
        if self.r.config.keeper.jobs.iter().any(|j| j.name == super::config::DEMO_UPKEEP) {
            self.step(progress, "keeper job: Chainlink's UpkeepCounter performed", self.upkeep_performed())
                .await?;
        }
        let ts = latest_timestamp(&self.r.deployer).await?;
        let midnight = (ts / 86_400 + 1) * 86_400;
        self.step(progress, "time → 00:00 UTC: grant_stream (daily)", self.jump_and_settle(midnight + 30))
            .await?;
        self.step(
            progress,
            "time → 09:00 UTC: payroll (monthly), gas_topup (weekly)",
            self.jump_and_settle(midnight + 9 * 3600 + 30),
        )
        .await?;
        self.step(progress, "ETH 3,000 → 3,900 USD (feed and pool): rebalance", self.move_price()).await?;
        self.step(progress, "30,000 GOV grant: over budget, escalates to the root", self.escalate()).await?;
        Ok(())
    }

    /// After `--resume`: the scenario ran before. Waits for the agent to catch up with the chain
    /// and finish what its journal holds, then moves on to the next day, so the daily policies
    /// act through the restarted quorum.
    pub async fn resume(&self, progress: &mut Progress) -> anyhow::Result<()> {
        self.step(progress, "agent watching the chain", self.wait_for_agent()).await?;
        self.step(progress, "agent caught up (journal resumed)", self.catch_up()).await?;
        let ts = latest_timestamp(&self.r.deployer).await?;
        let midnight = (ts / 86_400 + 1) * 86_400;
        self.step(
            progress,
            "time → next 00:00 UTC: grant_stream (daily)",
            self.jump_and_settle(midnight + 30),
        )
        .await
    }

    async fn step(
        &self,
        progress: &mut Progress,
        name: &str,
        fut: impl std::future::Future<Output = anyhow::Result<String>>,
    ) -> anyhow::Result<()> {
        tokio::time::sleep(self.pace).await;
        self.shared.event(format!("… {name}"));
        let t0 = Instant::now();
        let limit = if self.approval == Approval::Auto { STEP_TIMEOUT } else { Duration::MAX };
        let result = match tokio::time::timeout(limit, fut).await {
            Ok(r) => r,
            Err(_) => Err(anyhow::anyhow!("timed out after {} s", STEP_TIMEOUT.as_secs())),
        };
        let ms = t0.elapsed().as_millis();
        match result {
            Ok(detail) => {
                self.shared.event(format!("✓ {name} ({:.1} s) {detail}", ms as f64 / 1000.0));
                progress.record(name, t0, &detail, true);
                Ok(())
            }
            Err(e) => {
                let text = format!("{e:#}");
                self.shared.event(format!("✗ {name}: {text}"));
                progress.record(name, t0, &text, false);
                Err(e.context(format!("scenario step {name:?}")))
            }
        }
    }

    /// Waits until the demo upkeep's first perform is confirmed: the agent checks it at the head
    /// when it starts, and the perform's own block confirms it (the dev chain needs 1).
    async fn upkeep_performed(&self) -> anyhow::Result<String> {
        use treasury_agent::journal::keeper::RunState;
        loop {
            let runs = self
                .journal
                .keeper_runs(Some(super::config::DEMO_UPKEEP), 10)
                .await
                .context("reading keeper runs")?;
            if let Some(run) = runs.iter().find(|r| r.state == RunState::Confirmed) {
                return Ok(format!(
                    "performUpkeep in tx {} (block {})",
                    run.tx_hash.as_deref().unwrap_or_default(),
                    run.block_number
                ));
            }
            if let Some(run) = runs.iter().find(|r| r.state == RunState::Skipped) {
                anyhow::bail!("the upkeep was skipped: {}", run.reason.as_deref().unwrap_or_default());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn wait_for_agent(&self) -> anyhow::Result<String> {
        let safe = self.r.deployment.safe.to_string().to_lowercase();
        loop {
            if let Some(c) = self.journal.cursor(CURSOR_SOURCE, &safe).await.context("reading the cursor")? {
                return Ok(format!("from block {}", c.block_number));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Moves the chain's clock to `target` (`evm_increaseTime` + `anvil_mine`), refreshes the
    /// price feeds (as their keepers would), and waits for the agent to finish what fired.
    async fn jump_and_settle(&self, target: u64) -> anyhow::Result<String> {
        let now = latest_timestamp(&self.r.deployer).await?;
        let delta = target.saturating_sub(now);
        let p = &self.r.deployer;
        let before = self.finished().await?;
        let _: serde_json::Value = p
            .raw_request("evm_increaseTime".into(), (U256::from(delta),))
            .await
            .context("evm_increaseTime")?;
        self.mine(1).await?;
        self.heartbeat().await?;
        let head = p.get_block_number().await.context("eth_blockNumber")?;
        self.settle(head).await?;
        let n = self.finished().await?.saturating_sub(before);
        Ok(format!("{}, {n} intent(s) done", span(delta)))
    }

    async fn mine(&self, blocks: u64) -> anyhow::Result<()> {
        let _: serde_json::Value = self
            .r
            .deployer
            .raw_request("anvil_mine".into(), (U256::from(blocks),))
            .await
            .context("anvil_mine")?;
        Ok(())
    }

    async fn heartbeat(&self) -> anyhow::Result<()> {
        heartbeat(self.r).await
    }

    async fn set_price(&self, feed: Address, answer: I256) -> anyhow::Result<()> {
        set_price(self.r, feed, answer).await
    }

    /// Waits until the agent's cursor passed `block`, no intent is unfinished and no manual
    /// request is open; an intent waiting for the root gets a decision (asked, or `--yes`).
    async fn settle(&self, block: u64) -> anyhow::Result<()> {
        let safe = self.r.deployment.safe.to_string().to_lowercase();
        loop {
            let cursor = self.journal.cursor(CURSOR_SOURCE, &safe).await.context("reading the cursor")?;
            let pending = self.journal.pending().await.context("reading pending intents")?;
            let open = self.journal.open_manual_triggers().await.context("reading manual triggers")?;
            if cursor.is_some_and(|c| c.block_number >= block) && open.is_empty() {
                if pending.is_empty() {
                    return Ok(());
                }
                for p in pending.iter().filter(|p| p.intent.state == IntentState::AwaitingRoot) {
                    self.decide(&p.intent).await?;
                }
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    async fn finished(&self) -> anyhow::Result<usize> {
        let all = self.journal.list(&IntentFilter { limit: Some(1000), ..Default::default() }).await?;
        Ok(all.iter().filter(|i| i.state.is_terminal()).count())
    }

    /// Moves the ETH feed and the USDC/WETH pool to the new price, then mines up to the next
    /// rebalance block and waits for the agent.
    async fn move_price(&self) -> anyhow::Result<String> {
        let d = &self.r.deployment;
        let p = &self.r.deployer;
        let me = self.r.deployer_address;
        let before = self.finished().await?;
        self.set_price(d.eth_feed, I256::try_from(ETH_PRICE_E8).expect("fits")).await?;
        let usdc = d.token("USDC").context("USDC deployed")?.address;
        let pair = IUniswapV2Factory::new(d.uniswap_factory, p)
            .getPair(usdc, d.weth)
            .call()
            .await
            .context("getPair")?;
        let pair_c = IUniswapV2Pair::new(pair, p);
        let reserves = pair_c.getReserves().call().await.context("getReserves")?;
        let token0 = pair_c.token0().call().await.context("token0")?;
        let (r0, r1) = (U256::from(reserves.reserve0), U256::from(reserves.reserve1));
        let (r_usdc, r_weth) = if token0 == usdc { (r0, r1) } else { (r1, r0) };
        // USDC units per wei at the new price, 0.3% above the oracle so the pool's fee does not
        // leave it below: reserves x·y = k with x/y = price → x = sqrt(k · price).
        let target_usdc = (r_usdc * r_weth * U256::from(ETH_PRICE_E8) * U256::from(1003u64)
            / U256::from(1000u64)
            / U256::from(10u64).pow(U256::from(20u64)))
        .root(2);
        let amount_in = target_usdc.saturating_sub(r_usdc);
        if !amount_in.is_zero() {
            let token = TestToken::new(usdc, p);
            token.mint(me, amount_in).send().await.context("USDC.mint")?.get_receipt().await?;
            token.approve(d.router, amount_in).send().await.context("USDC.approve")?.get_receipt().await?;
            let receipt = IUniswapV2Router02::new(d.router, p)
                .swapExactTokensForETH(amount_in, U256::ZERO, vec![usdc, d.weth], me, U256::MAX)
                .send()
                .await
                .context("swapExactTokensForETH")?
                .get_receipt()
                .await?;
            if !receipt.status() {
                bail!("moving the pool: swap reverted (tx {})", receipt.transaction_hash);
            }
        }
        let head = p.get_block_number().await.context("eth_blockNumber")?;
        let next = (head / REBALANCE_EVERY + 1) * REBALANCE_EVERY;
        self.mine(next - head).await?;
        self.settle(next).await?;
        let n = self.finished().await?.saturating_sub(before);
        let swaps = self
            .journal
            .list(&IntentFilter { policy: Some("rebalance".into()), ..Default::default() })
            .await?
            .len();
        if swaps == 0 {
            bail!("the rebalance policy created no swap at block {next}");
        }
        Ok(format!("{n} intent(s) done"))
    }

    /// Queues the manual grant, waits for it to reach the root, approves (or asks), and waits
    /// for the execution.
    async fn escalate(&self) -> anyhow::Result<String> {
        // Through the agent's API, as `treasury trigger` does.
        self.api.queue(ESCALATED_POLICY).await?;
        let filter = IntentFilter { policy: Some(ESCALATED_POLICY.into()), ..Default::default() };
        let intent = loop {
            if let Some(i) = self.journal.list(&filter).await?.into_iter().next() {
                if i.state == IntentState::AwaitingRoot {
                    break i;
                }
                if i.state.is_terminal() {
                    bail!("the grant ended {} before reaching the root", i.state.as_str());
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        let waited = Instant::now();
        let approve = self.decide(&intent).await?.context("the root service holds no pending request")?;
        let head = self.r.deployer.get_block_number().await.context("eth_blockNumber")?;
        self.settle(head).await?;
        let done =
            self.journal.list(&filter).await?.into_iter().next().context("the grant intent vanished")?;
        if approve && done.state != IntentState::Confirmed {
            bail!("the approved grant ended {}", done.state.as_str());
        }
        Ok(format!(
            "{} after the root's decision ({:.1} s waiting for it)",
            done.state.as_str(),
            waited.elapsed().as_secs_f64()
        ))
    }
}

impl Scenario<'_> {
    /// Decides on the root's pending request(s) for `intent` (in a dev run every request comes
    /// from this agent): approves with `--yes`/`--once`, else asks. Returns whether it approved,
    /// or `None` when nothing was pending.
    async fn decide(&self, intent: &Intent) -> anyhow::Result<Option<bool>> {
        // As the demo's approver, through the root service's API (which authenticates the
        // approval and re-runs its guard before it signs).
        let root = RootClient::new(self.r.root_url.clone(), self.r.approver_token.clone());
        let pending = root.list(Some(RequestState::Pending)).await.context("listing root requests")?;
        if pending.is_empty() {
            // Decided already; the agent has not polled the root since.
            return Ok(None);
        }
        let mut approved = true;
        for request in pending {
            let approve = match self.approval {
                Approval::Auto => true,
                Approval::Ask => {
                    let question = format!(
                        "Root approval needed: intent #{} {} — {}\nRoot request {} from {}: approve here [y/N] or on the approvals page {}/approvals ",
                        intent.id,
                        intent.policy,
                        super::view::describe(&intent.payload),
                        request.id,
                        request.requester,
                        self.r.root_url.trim_end_matches('/'),
                    );
                    // Whichever comes first: an answer at the prompt, or a decision on the page.
                    let decided = tokio::select! {
                        answer = ask(&self.shared, question) => answer,
                        state = decided_on_page(&root, &request.id) => {
                            clear_prompt(&self.shared);
                            self.shared.event(format!("root request {} {state} on the approvals page", request.id));
                            if state != RequestState::Approved && state != RequestState::Signed {
                                approved = false;
                            }
                            continue;
                        }
                    };
                    match decided {
                        Some(answer) => answer,
                        // No terminal to answer: only the page decides.
                        None => {
                            let state = decided_on_page(&root, &request.id).await;
                            self.shared
                                .event(format!("root request {} {state} on the approvals page", request.id));
                            if state != RequestState::Approved && state != RequestState::Signed {
                                approved = false;
                            }
                            continue;
                        }
                    }
                }
            };
            if approve {
                root.approve(&request.id).await.context("approving the root request")?;
                self.shared.event(format!("root request {} approved", request.id));
            } else {
                root.reject(&request.id, "declined at the treasury dev prompt")
                    .await
                    .context("rejecting the root request")?;
                self.shared.event(format!("root request {} rejected", request.id));
                approved = false;
            }
        }
        Ok(Some(approved))
    }

    /// Waits until the agent passed the head and everything it holds is final.
    async fn catch_up(&self) -> anyhow::Result<String> {
        let head = self.r.deployer.get_block_number().await.context("eth_blockNumber")?;
        self.settle(head).await?;
        Ok(format!("block {head}, {} intent(s) final", self.finished().await?))
    }
}

/// Before the agent starts: the clock moves to 23:59 UTC (unless it is later already) and the
/// feeds report again, so each of the scenario's jumps crosses exactly the schedules it names
/// whatever the time of day the demo starts (the agent's first cursor is the head: what the
/// clock skipped before it started never fires).
pub async fn set_clock_before_midnight(r: &Running) -> anyhow::Result<String> {
    let now = latest_timestamp(&r.deployer).await?;
    let target = (now / 86_400 + 1) * 86_400 - 60;
    let delta = target.saturating_sub(now);
    let _: serde_json::Value = r
        .deployer
        .raw_request("evm_increaseTime".into(), (U256::from(delta),))
        .await
        .context("evm_increaseTime")?;
    heartbeat(r).await?;
    Ok(span(delta))
}

/// The timestamp of the chain's latest block.
pub(super) async fn latest_timestamp(provider: &alloy::providers::DynProvider) -> anyhow::Result<u64> {
    let block = provider
        .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
        .await
        .context("eth_getBlockByNumber")?
        .context("no latest block")?;
    Ok(block.header.timestamp)
}

/// A forward jump of the clock, readably (`+90 s`, `+9.0 h`).
pub(super) fn span(secs: u64) -> String {
    if secs < 3600 { format!("+{secs} s") } else { format!("+{:.1} h", secs as f64 / 3600.0) }
}

/// Every feed reports its current answer again, so prices are fresh after a jump in time.
pub(super) async fn heartbeat(r: &Running) -> anyhow::Result<()> {
    let d = &r.deployment;
    for feed in std::iter::once(d.eth_feed).chain(d.tokens.iter().map(|t| t.feed)) {
        let f = PriceFeed::new(feed, &r.deployer);
        let answer = f.latestRoundData().call().await.with_context(|| format!("reading feed {feed}"))?._1;
        set_price(r, feed, answer).await?;
    }
    Ok(())
}

async fn set_price(r: &Running, feed: Address, answer: I256) -> anyhow::Result<()> {
    PriceFeed::new(feed, &r.deployer)
        .setAnswer(answer)
        .send()
        .await
        .with_context(|| format!("PriceFeed.setAnswer on {feed}"))?
        .get_receipt()
        .await
        .with_context(|| format!("PriceFeed.setAnswer on {feed}: receipt"))?;
    Ok(())
}

/// Waits until root request `id` is no longer pending (decided on the approvals page) and
/// returns its state.
async fn decided_on_page(root: &RootClient, id: &str) -> RequestState {
    loop {
        if let Ok(rec) = root.get(id).await
            && rec.state != RequestState::Pending
        {
            return rec.state;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

fn clear_prompt(shared: &Shared) {
    if let Ok(mut p) = shared.prompt.lock() {
        *p = None;
    }
}

/// Asks `question` through the live view and reads the answer from stdin on a plain thread (a
/// runtime thread blocked on stdin would hold up the exit); `None` when stdin has ended (no one
/// can answer).
async fn ask(shared: &Shared, question: String) -> Option<bool> {
    if let Ok(mut p) = shared.prompt.lock() {
        *p = Some(question);
    }
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let n = std::io::stdin().read_line(&mut line).unwrap_or(0);
        let _ = tx.send(if n == 0 { None } else { Some(line) });
    });
    let answer = rx.await.ok().flatten();
    if let Ok(mut p) = shared.prompt.lock() {
        *p = None;
    }
    let answer = answer?;
    Some(matches!(answer.trim(), "y" | "Y" | "yes" | "Yes"))
}
