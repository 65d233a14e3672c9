//! The module's admin client: build the admin operations, describe them against the module's current
//! settings, check the root signature, send `admin(op, sig)`, apply queued changes after the
//! timelock, and list what is queued.
//!
//! The module decides whether a change widens power (queued behind the timelock) or narrows it
//! (applied at once); [`ModuleAdmin::plan`] predicts it from the same views, and the outcome is read
//! back from the transaction's events, never assumed.
use alloy::primitives::{Address, B256, Bytes, Signature, U256, keccak256};
use alloy::providers::{DynProvider, Provider};
use alloy::rpc::types::{Filter, TransactionReceipt};
use alloy::sol_types::{SolEvent, SolValue};
use serde::{Deserialize, Serialize};

use super::actions::AdminAction;
use crate::contracts::TreasuryModule::{self, TreasuryModuleErrors};
use crate::error::{ChainError, Result};
use crate::operation::{AdminOp, admin_digest};

/// The id the module gives the change `(action, params)` queued by the admin op with `nonce`:
/// `keccak256(abi.encode(action, params, nonce))`.
pub fn change_id(action: u8, params: &Bytes, nonce: U256) -> B256 {
    // A uint8 is encoded as its 32-byte word, like a uint256 of the same value.
    keccak256((U256::from(action), params.clone(), nonce).abi_encode_params())
}

/// Whether a change applies at once or waits out the timelock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "effect")]
pub enum Effect {
    /// It narrows power (or pauses, unpauses, cancels): applied in the same transaction.
    Immediate,
    /// It widens power: queued, applicable with `applyChange` after `delay_secs`.
    Timelocked {
        /// The module's timelock delay now.
        delay_secs: u64,
    },
}

/// An admin operation ready to be signed by the root, with what it changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminPlan {
    /// Chain id (EIP-712 domain).
    pub chain_id: u64,
    /// The module (EIP-712 verifying contract).
    pub module: Address,
    /// The module's registered root.
    pub root: Address,
    /// The typed action.
    pub action: AdminAction,
    /// One-line description of the action.
    pub summary: String,
    /// The setting it changes as the module reports it now.
    pub current: String,
    /// What the module will do with it (predicted from its views).
    pub effect: Effect,
    /// The op `admin()` takes.
    pub op: AdminOp,
    /// Its EIP-712 digest, rebuilt here from the op: what the root signs.
    pub digest: B256,
}

/// A change queued in the module.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedChange {
    /// `keccak256(abi.encode(action, params, nonce))`.
    pub id: B256,
    /// The typed action.
    pub action: AdminAction,
    /// One-line description.
    pub summary: String,
    /// Encoded params, as `applyChange` takes them.
    pub params: Bytes,
    /// The admin nonce of the op that queued it.
    pub nonce: U256,
    /// Unix seconds from which `applyChange` succeeds.
    pub eta: u64,
}

/// What an admin or apply transaction did, read from its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdminOutcome {
    /// The transaction.
    pub tx_hash: B256,
    /// Block it was mined in.
    pub block: Option<u64>,
    /// Changes applied by it.
    pub applied: Vec<AdminAction>,
    /// The change it queued, if it was widening.
    pub queued: Option<QueuedChange>,
}

/// The admin side of one deployed module.
#[derive(Debug, Clone)]
pub struct ModuleAdmin {
    provider: DynProvider,
    module: Address,
    chain_id: u64,
}

impl ModuleAdmin {
    /// A failed read of the module's view `call`.
    fn view(&self, call: &'static str) -> impl Fn(alloy::contract::Error) -> ChainError + '_ {
        move |e| ChainError::rpc(call, Some(self.module), e)
    }

    /// A failed RPC request about the module.
    fn rpc<E>(&self, call: &'static str) -> impl FnOnce(E) -> ChainError + '_
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        move |e| ChainError::rpc(call, Some(self.module), e)
    }

    /// A failed module call: its custom error when it reverted with one, else the RPC failure.
    fn call_error(&self, call: &'static str) -> impl Fn(alloy::contract::Error) -> ChainError + '_ {
        move |e| module_error(call, &e).unwrap_or_else(|| ChainError::rpc(call, Some(self.module), e))
    }
}

/// Turns a failed module call into [`ChainError::ModuleRevert`] naming the module's custom error.
pub fn module_error(call: &str, e: &alloy::contract::Error) -> Option<ChainError> {
    let decoded = e.as_decoded_interface_error::<TreasuryModuleErrors>()?;
    let text = format!("{decoded:?}");
    let (name, inner) = match text.split_once('(') {
        Some((name, rest)) => (name.to_owned(), rest.strip_suffix(')').unwrap_or(rest)),
        None => (text.clone(), ""),
    };
    let detail = inner.strip_prefix(name.as_str()).unwrap_or(inner).to_owned();
    Some(ChainError::ModuleRevert { call: call.to_owned(), name, detail })
}

/// A one-line description of `action`.
pub fn describe(action: &AdminAction) -> String {
    match action {
        AdminAction::Pause => "pause the module (exec stops)".into(),
        AdminAction::Unpause => "unpause the module".into(),
        AdminAction::SetGroupKey { x, parity } => {
            format!("rotate the FROST group key to x={x:#066x} parity={parity}")
        }
        AdminAction::SetRoot { root } => format!("make {root} the root"),
        AdminAction::SetBudget { token, limit, period } if limit.is_zero() && *period == 0 => {
            format!("untrack {} (tier 1 can no longer move it)", asset(*token))
        }
        AdminAction::SetBudget { token, limit, period } => {
            format!("set the budget of {} to {limit} per {period} s", asset(*token))
        }
        AdminAction::SetCallAllowed { target, selector, allowed } => {
            format!("{} calls to {target}.{selector}", if *allowed { "allow" } else { "forbid" })
        }
        AdminAction::SetSpenderAllowed { spender, allowed } => {
            format!("{} approvals to spender {spender}", if *allowed { "allow" } else { "forbid" })
        }
        AdminAction::SetTimelock { delay } => format!("set the timelock to {delay} s"),
        AdminAction::Cancel { change_id } => format!("cancel queued change {change_id}"),
    }
}

fn asset(token: Address) -> String {
    if token == Address::ZERO { "ETH".into() } else { token.to_string() }
}

impl ModuleAdmin {
    /// The module at `module`, read through `provider`; fails if no contract is there.
    pub async fn connect(provider: DynProvider, module: Address) -> Result<Self> {
        let chain_id = provider.get_chain_id().await.map_err(|e| ChainError::rpc("eth_chainId", None, e))?;
        let code = provider
            .get_code_at(module)
            .await
            .map_err(|e| ChainError::rpc("eth_getCode", Some(module), e))?;
        if code.is_empty() {
            return Err(ChainError::InvalidInput(format!("no contract at {module} on chain {chain_id}")));
        }
        Ok(Self { provider, module, chain_id })
    }

    /// The chain id.
    pub fn chain_id(&self) -> u64 {
        self.chain_id
    }

    /// The module address.
    pub fn module(&self) -> Address {
        self.module
    }

    /// The Safe the module executes from (`safe()`).
    pub async fn safe(&self) -> Result<Address> {
        self.contract().safe().call().await.map_err(self.view("safe"))
    }

    fn contract(&self) -> TreasuryModule::TreasuryModuleInstance<DynProvider> {
        TreasuryModule::new(self.module, self.provider.clone())
    }

    /// The latest block's timestamp (the module's `block.timestamp` for the next transaction, roughly).
    pub async fn chain_time(&self) -> Result<u64> {
        let block = self
            .provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .map_err(|e| ChainError::rpc("eth_getBlockByNumber", None, e))?
            .ok_or_else(|| ChainError::InvalidAnswer {
                call: "eth_getBlockByNumber".into(),
                reason: "no latest block".into(),
            })?;
        Ok(block.header.timestamp)
    }

    /// Builds the admin op for `action` under the module's next admin nonce, valid for `ttl_secs`
    /// past the chain's current time, and describes it against the current settings.
    pub async fn plan(&self, action: AdminAction, ttl_secs: u64) -> Result<AdminPlan> {
        let m = self.contract();
        let nonce = m.adminNonce().call().await.map_err(self.view("adminNonce"))?;
        let root = m.root().call().await.map_err(self.view("root"))?;
        let delay = m.timelockDelay().call().await.map_err(self.view("timelockDelay"))?;
        let now = self.chain_time().await?;
        let (current, widening) = self.current(&action, delay).await?;
        let op = AdminOp {
            action: action.code(),
            params: action.params(),
            nonce,
            deadline: U256::from(now.saturating_add(ttl_secs)),
        };
        let digest = admin_digest(&op, self.chain_id, self.module);
        Ok(AdminPlan {
            chain_id: self.chain_id,
            module: self.module,
            root,
            summary: describe(&action),
            action,
            current,
            effect: if widening { Effect::Timelocked { delay_secs: delay } } else { Effect::Immediate },
            op,
            digest,
        })
    }

    /// The current setting `action` touches, and whether changing it widens power (the rule of
    /// `TreasuryModule._isWidening`).
    async fn current(&self, action: &AdminAction, delay: u64) -> Result<(String, bool)> {
        let m = self.contract();
        Ok(match action {
            AdminAction::Pause | AdminAction::Unpause => {
                let paused = m.paused().call().await.map_err(self.view("paused"))?;
                (if paused { "paused" } else { "running" }.into(), false)
            }
            AdminAction::SetGroupKey { .. } => {
                let k = m.groupKey().call().await.map_err(self.view("groupKey"))?;
                (format!("group key x={:#066x} parity={}", k.x, k.parity), true)
            }
            AdminAction::SetRoot { .. } => {
                let r = m.root().call().await.map_err(self.view("root"))?;
                (format!("root {r}"), true)
            }
            AdminAction::SetBudget { token, limit, period } => {
                let b = m.budget(*token).call().await.map_err(self.view("budget"))?;
                let untrack = limit.is_zero() && *period == 0;
                if b.period == 0 {
                    // tracking makes an asset spendable at tier 1: it widens (timelocked)
                    (format!("{} untracked", asset(*token)), !untrack)
                } else {
                    (
                        format!("{} per {} s (spent {} this window)", b.limit, b.period, b.spent),
                        !untrack && (*limit > b.limit || *period < b.period),
                    )
                }
            }
            AdminAction::SetCallAllowed { target, selector, allowed } => {
                let now =
                    m.isCallAllowed(*target, *selector).call().await.map_err(self.view("isCallAllowed"))?;
                (if now { "allowed" } else { "not allowed" }.into(), *allowed)
            }
            AdminAction::SetSpenderAllowed { spender, allowed } => {
                let now = m.isSpenderAllowed(*spender).call().await.map_err(self.view("isSpenderAllowed"))?;
                (if now { "allowed" } else { "not allowed" }.into(), *allowed)
            }
            AdminAction::SetTimelock { delay: new } => (format!("{delay} s"), *new < delay),
            AdminAction::Cancel { change_id } => {
                let eta = m.queuedChange(*change_id).call().await.map_err(self.view("queuedChange"))?;
                (if eta.is_zero() { "not queued".into() } else { format!("queued, eta {eta}") }, false)
            }
        })
    }

    /// Checks that `sig` is the module's root signing `plan.digest`, then sends `admin(op, sig)` from
    /// `sender` (after a simulation, so a refusal is reported with the module's error name and
    /// nothing is spent) and reads what happened from the receipt.
    pub async fn send(
        &self,
        sender: &DynProvider,
        plan: &AdminPlan,
        sig: &Signature,
    ) -> Result<AdminOutcome> {
        let signer = sig.recover_address_from_prehash(&plan.digest).map_err(ChainError::BadSignature)?;
        if signer != plan.root {
            return Err(ChainError::WrongSigner { signer, root: plan.root });
        }
        let m = TreasuryModule::new(self.module, sender.clone());
        let op = TreasuryModule::AdminOp {
            action: plan.op.action,
            params: plan.op.params.clone(),
            nonce: plan.op.nonce,
            deadline: plan.op.deadline,
        };
        let no_frost = TreasuryModule::FrostSig { rX: U256::ZERO, rY: U256::ZERO, z: U256::ZERO };
        let root_sig = Bytes::from(sig.as_bytes().to_vec());
        let call = m.admin(op, no_frost, root_sig);
        call.call().await.map_err(self.call_error("admin"))?;
        let receipt = call.send().await.map_err(self.call_error("admin"))?;
        let receipt = receipt.get_receipt().await.map_err(self.rpc("admin receipt"))?;
        self.outcome("admin", &receipt, Some(plan.op.nonce))
    }

    /// Calls `applyChange` for a queued change from `sender` (anyone may).
    pub async fn apply(&self, sender: &DynProvider, change: &QueuedChange) -> Result<AdminOutcome> {
        let m = TreasuryModule::new(self.module, sender.clone());
        let call = m.applyChange(change.action.code(), change.params.clone(), change.nonce);
        call.call().await.map_err(self.call_error("applyChange"))?;
        let pending = call.send().await.map_err(self.call_error("applyChange"))?;
        let receipt = pending.get_receipt().await.map_err(self.rpc("applyChange receipt"))?;
        self.outcome("applyChange", &receipt, None)
    }

    fn outcome(&self, call: &str, receipt: &TransactionReceipt, nonce: Option<U256>) -> Result<AdminOutcome> {
        if !receipt.status() {
            return Err(ChainError::Reverted { what: call.to_owned(), tx_hash: receipt.transaction_hash });
        }
        let mut out = AdminOutcome {
            tx_hash: receipt.transaction_hash,
            block: receipt.block_number,
            applied: Vec::new(),
            queued: None,
        };
        for log in receipt.inner.logs() {
            if log.address() != self.module {
                continue;
            }
            if let Ok(e) = log.log_decode::<TreasuryModule::ChangeApplied>() {
                let e = e.inner.data;
                out.applied.push(AdminAction::decode(e.action, &e.params)?);
            } else if let Ok(e) = log.log_decode::<TreasuryModule::ChangeQueued>() {
                let e = e.inner.data;
                let action = AdminAction::decode(e.action, &e.params)?;
                let nonce = nonce.ok_or_else(|| ChainError::InvalidAnswer {
                    call: call.to_owned(),
                    reason: "it queued a change".into(),
                })?;
                out.queued = Some(QueuedChange {
                    id: e.id,
                    summary: describe(&action),
                    action,
                    params: e.params,
                    nonce,
                    eta: u64::try_from(e.eta).unwrap_or(u64::MAX),
                });
            }
        }
        Ok(out)
    }

    /// Changes still queued (neither applied nor cancelled), from the module's `ChangeQueued`
    /// events since `from_block`, oldest first.
    pub async fn queued_changes(&self, from_block: u64) -> Result<Vec<QueuedChange>> {
        let m = self.contract();
        let filter = Filter::new()
            .address(self.module)
            .event_signature(TreasuryModule::ChangeQueued::SIGNATURE_HASH)
            .from_block(from_block);
        let logs = self.provider.get_logs(&filter).await.map_err(self.rpc("eth_getLogs"))?;
        let admin_nonce = m.adminNonce().call().await.map_err(self.view("adminNonce"))?;
        let mut out = Vec::new();
        for log in logs {
            let Ok(e) = log.log_decode::<TreasuryModule::ChangeQueued>() else { continue };
            let e = e.inner.data;
            let eta = m.queuedChange(e.id).call().await.map_err(self.view("queuedChange"))?;
            if eta.is_zero() {
                continue;
            }
            // The event does not carry the nonce; it is the one whose change id matches.
            let limit = u64::try_from(admin_nonce).unwrap_or(u64::MAX);
            let Some(nonce) =
                (0..limit).rev().map(U256::from).find(|n| change_id(e.action, &e.params, *n) == e.id)
            else {
                continue;
            };
            let action = AdminAction::decode(e.action, &e.params)?;
            out.push(QueuedChange {
                id: e.id,
                summary: describe(&action),
                action,
                params: e.params,
                nonce,
                eta: u64::try_from(eta).unwrap_or(u64::MAX),
            });
        }
        Ok(out)
    }

    /// The queued change `id`, or [`ChainError::InvalidInput`] when nothing with this id is queued.
    pub async fn find_queued(&self, id: B256, from_block: u64) -> Result<QueuedChange> {
        self.queued_changes(from_block).await?.into_iter().find(|c| c.id == id).ok_or_else(|| {
            ChainError::InvalidInput(format!("no change {id} is queued in module {}", self.module))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn change_id_is_keccak_of_the_abi_encoded_triple() {
        let params = AdminAction::SetTimelock { delay: 60 }.params();
        let mut raw = Vec::new();
        raw.extend_from_slice(&U256::from(7u8).to_be_bytes::<32>());
        raw.extend_from_slice(&U256::from(0x60u8).to_be_bytes::<32>());
        raw.extend_from_slice(&U256::from(3u8).to_be_bytes::<32>());
        raw.extend_from_slice(&U256::from(params.len()).to_be_bytes::<32>());
        raw.extend_from_slice(&params);
        assert_eq!(change_id(7, &params, U256::from(3u8)), keccak256(raw));
        assert_ne!(change_id(7, &params, U256::from(4u8)), change_id(7, &params, U256::from(3u8)));
    }
}
