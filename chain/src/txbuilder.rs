//! Safe{Wallet} Transaction Builder batch files: the JSON its Transaction Builder app imports
//! (`version`, `chainId`, `createdAt`, `meta` with its checksum, `transactions`), written for the
//! Safe's owners when a change needs a Safe transaction (enabling and configuring the module).
//!
//! Each transaction is written as the Transaction Builder writes a contract call: `data` null, the
//! method in `contractMethod` and its arguments as strings in `contractInputsValues`, so the app
//! shows the call decoded and encodes it itself. The checksum is the one the app checks on import:
//! keccak256 of its own canonical serialisation of the file without `meta.checksum` and with
//! `meta.name` null (keys sorted at every level, each object written as the JSON array of its
//! keys followed by each value and a comma).

use std::collections::BTreeMap;

use alloy::dyn_abi::{DynSolType, DynSolValue, JsonAbiExt};
use alloy::json_abi::{Function, Param, StateMutability};
use alloy::primitives::{Address, B256, Bytes, U256, keccak256};
use alloy::sol_types::SolCall;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::admin::AdminAction;
use crate::contracts::IMultiSend;
use crate::error::{ChainError, Result};
use crate::safe::SafeTx;

/// The batch file format version the Transaction Builder writes and reads.
pub const BATCH_VERSION: &str = "1.0";
/// The Transaction Builder release whose format and checksum these files follow.
pub const TX_BUILDER_VERSION: &str = "1.18.3";

/// A Transaction Builder batch file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchFile {
    /// Format version ([`BATCH_VERSION`]).
    pub version: String,
    /// Chain id, as a decimal string.
    pub chain_id: String,
    /// Creation time, unix milliseconds.
    pub created_at: u64,
    /// Name, description, origin and checksum.
    pub meta: BatchMeta,
    /// The calls the Safe makes, in order.
    pub transactions: Vec<BatchTransaction>,
}

/// A batch file's `meta`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchMeta {
    /// Shown as the batch's name (not covered by the checksum).
    pub name: String,
    /// What the batch does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The Transaction Builder version of the format.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_builder_version: Option<String>,
    /// The Safe the batch is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_from_safe_address: Option<String>,
    /// The owner who made it (empty when made off the app).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_from_owner_address: Option<String>,
    /// `0x` + keccak256 of the canonical serialisation (see the module docs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checksum: Option<String>,
}

/// One call of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BatchTransaction {
    /// The contract called.
    pub to: Address,
    /// Wei sent, as a decimal string.
    pub value: String,
    /// Raw calldata, or null when the call is given by `contract_method`.
    pub data: Option<Bytes>,
    /// The method called.
    pub contract_method: Option<ContractMethod>,
    /// Its arguments by input name, each as a string (decimal integers, 0x hex bytes).
    pub contract_inputs_values: Option<BTreeMap<String, String>>,
}

/// A method as the Transaction Builder describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContractMethod {
    /// Its inputs, in order.
    pub inputs: Vec<ContractInput>,
    /// Its name.
    pub name: String,
    /// Whether it takes ETH.
    pub payable: bool,
}

/// One input of a [`ContractMethod`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContractInput {
    /// Solidity type as the compiler names it.
    pub internal_type: String,
    /// Parameter name (the key in `contractInputsValues`).
    pub name: String,
    /// ABI type.
    #[serde(rename = "type")]
    pub ty: String,
}

fn input(name: &str, ty: &str) -> ContractInput {
    ContractInput { internal_type: ty.into(), name: name.into(), ty: ty.into() }
}

impl BatchTransaction {
    /// A call of `name(inputs…)` on `to` with the given argument strings.
    fn method(to: Address, name: &str, inputs: Vec<ContractInput>, values: Vec<String>) -> Self {
        let args = inputs.iter().map(|i| i.name.clone()).zip(values).collect();
        Self {
            to,
            value: "0".into(),
            data: None,
            contract_method: Some(ContractMethod { inputs, name: name.into(), payable: false }),
            contract_inputs_values: Some(args),
        }
    }

    /// `safe.enableModule(module)`.
    pub fn enable_module(safe: Address, module: Address) -> Self {
        Self::method(safe, "enableModule", vec![input("module", "address")], vec![module.to_checksum(None)])
    }

    /// `module.configure(action, params)`: the change applied at once by the Safe.
    pub fn configure(module: Address, action: &AdminAction) -> Self {
        Self::method(
            module,
            "configure",
            vec![input("action", "uint8"), input("params", "bytes")],
            vec![action.code().to_string(), action.params().to_string()],
        )
    }

    /// The calldata: `data` when given, else the method encoded from its input strings, as the
    /// Transaction Builder encodes it.
    pub fn calldata(&self) -> Result<Bytes> {
        if let Some(data) = &self.data {
            return Ok(data.clone());
        }
        let (Some(method), Some(values)) = (&self.contract_method, &self.contract_inputs_values) else {
            return Err(ChainError::InvalidInput(format!(
                "transaction to {}: neither data nor a method",
                self.to
            )));
        };
        let bad = |what: String| ChainError::InvalidInput(format!("{}.{}: {what}", self.to, method.name));
        let mut params = Vec::new();
        let mut args: Vec<DynSolValue> = Vec::new();
        for i in &method.inputs {
            let ty = DynSolType::parse(&i.ty).map_err(|e| bad(format!("type {}: {e}", i.ty)))?;
            let text = values.get(&i.name).map(String::as_str).unwrap_or("");
            args.push(ty.coerce_str(text).map_err(|e| bad(format!("{} = {text:?}: {e}", i.name)))?);
            params.push(
                Param::parse(&format!("{} {}", i.ty, i.name))
                    .map_err(|e| bad(format!("input {}: {e}", i.name)))?,
            );
        }
        let function = Function {
            name: method.name.clone(),
            inputs: params,
            outputs: Vec::new(),
            state_mutability: if method.payable {
                StateMutability::Payable
            } else {
                StateMutability::NonPayable
            },
        };
        function.abi_encode_input(&args).map(Bytes::from).map_err(|e| bad(e.to_string()))
    }

    /// The wei sent.
    pub fn wei(&self) -> Result<U256> {
        self.value.parse().map_err(|e| {
            ChainError::InvalidInput(format!("transaction to {}: value {:?}: {e}", self.to, self.value))
        })
    }
}

impl BatchFile {
    /// A batch of `transactions` for `safe` on `chain_id`, created at `created_at_ms`, with its checksum.
    pub fn new(
        chain_id: u64,
        safe: Address,
        name: &str,
        description: &str,
        created_at_ms: u64,
        transactions: Vec<BatchTransaction>,
    ) -> Self {
        let mut file = Self {
            version: BATCH_VERSION.into(),
            chain_id: chain_id.to_string(),
            created_at: created_at_ms,
            meta: BatchMeta {
                name: name.into(),
                description: Some(description.into()),
                tx_builder_version: Some(TX_BUILDER_VERSION.into()),
                created_from_safe_address: Some(safe.to_checksum(None)),
                created_from_owner_address: Some(String::new()),
                checksum: None,
            },
            transactions,
        };
        file.meta.checksum = Some(file.checksum().to_string());
        file
    }

    /// The checksum the Transaction Builder expects in `meta.checksum` (computed without it).
    pub fn checksum(&self) -> B256 {
        let mut value = serde_json::to_value(self).expect("a batch file serialises");
        if let Some(meta) = value.get_mut("meta").and_then(Value::as_object_mut) {
            meta.remove("checksum");
        }
        checksum_of(&value)
    }

    /// Whether `meta.checksum` is the file's checksum (the Transaction Builder warns otherwise).
    pub fn checksum_ok(&self) -> bool {
        self.meta.checksum.as_deref().is_some_and(|c| c.eq_ignore_ascii_case(&self.checksum().to_string()))
    }

    /// The one Safe transaction Safe{Wallet} makes of the batch: a single call as it is, several
    /// calls as one DELEGATECALL of `multiSend` on the Safe's `MultiSendCallOnly`.
    pub fn safe_tx(&self, multisend_call_only: Address) -> Result<SafeTx> {
        match self.transactions.as_slice() {
            [] => Err(ChainError::InvalidInput("the batch has no transactions".into())),
            [one] => Ok(SafeTx { to: one.to, value: one.wei()?, data: one.calldata()?, operation: 0 }),
            many => {
                let mut packed = Vec::new();
                for tx in many {
                    let data = tx.calldata()?;
                    packed.push(0u8);
                    packed.extend_from_slice(tx.to.as_slice());
                    packed.extend_from_slice(&tx.wei()?.to_be_bytes::<32>());
                    packed.extend_from_slice(&U256::from(data.len()).to_be_bytes::<32>());
                    packed.extend_from_slice(&data);
                }
                let data = IMultiSend::multiSendCall { transactions: packed.into() }.abi_encode();
                Ok(SafeTx { to: multisend_call_only, value: U256::ZERO, data: data.into(), operation: 1 })
            }
        }
    }
}

/// keccak256 of the Transaction Builder's serialisation of `file` with `meta.name` null (the file
/// as given: the app computes it over the file without `meta.checksum`).
pub fn checksum_of(file: &Value) -> B256 {
    let mut file = file.clone();
    if let Some(meta) = file.get_mut("meta").and_then(Value::as_object_mut) {
        meta.insert("name".into(), Value::Null);
    }
    keccak256(serialize(&file).as_bytes())
}

/// The Transaction Builder's canonical form: arrays as `[a,b]`, objects as the JSON array of their
/// sorted keys followed by every value and a comma (`{["a","b"]1,2,}`), anything else as JSON.
fn serialize(value: &Value) -> String {
    match value {
        Value::Array(items) => format!("[{}]", items.iter().map(serialize).collect::<Vec<_>>().join(",")),
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            // JavaScript's default sort compares UTF-16 code units.
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            let mut out = format!("{{{}", serde_json::to_string(&keys).expect("keys serialise"));
            for key in keys {
                out.push_str(&serialize(&map[key]));
                out.push(',');
            }
            out.push('}');
            out
        }
        other => serde_json::to_string(other).expect("a JSON value serialises"),
    }
}

/// The batch that enables `module` on `safe` fully configured: every `action` applied by the Safe
/// (`configure`), then `enableModule`, so the module is live only with its settings.
pub fn enable_module_batch(
    chain_id: u64,
    safe: Address,
    module: Address,
    actions: &[AdminAction],
    created_at_ms: u64,
) -> BatchFile {
    let mut txs: Vec<BatchTransaction> =
        actions.iter().map(|a| BatchTransaction::configure(module, a)).collect();
    txs.push(BatchTransaction::enable_module(safe, module));
    let description = format!(
        "Configure the treasury module {module} ({} change(s): {}) and enable it on this Safe",
        actions.len(),
        actions.iter().map(crate::admin::describe).collect::<Vec<_>>().join("; ")
    );
    BatchFile::new(chain_id, safe, "treasury: enable the module", &description, created_at_ms, txs)
}

/// The batch that applies `actions` to `module` through the Safe (`configure`, at once: the Safe
/// is not held to the timelock).
pub fn configure_batch(
    chain_id: u64,
    safe: Address,
    module: Address,
    actions: &[AdminAction],
    created_at_ms: u64,
) -> BatchFile {
    let txs = actions.iter().map(|a| BatchTransaction::configure(module, a)).collect();
    let description = actions.iter().map(crate::admin::describe).collect::<Vec<_>>().join("; ");
    BatchFile::new(chain_id, safe, "treasury: configure the module", &description, created_at_ms, txs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts::{ISafe, TreasuryModule};

    /// The Transaction Builder's own test vector (apps/tx-builder/src/lib/checksum.test.js): its
    /// `addChecksum` hashes the object as given, here with `checksum: ''` in `meta`.
    #[test]
    fn the_checksum_matches_the_transaction_builders_test_vector() {
        let file = serde_json::json!({
            "version": "1.0",
            "chainId": "4",
            "createdAt": 1646321521061u64,
            "meta": {
                "name": "test batch file",
                "txBuilderVersion": "1.4.0",
                "checksum": "",
                "createdFromSafeAddress": "0xDF8a1Ce35c9a6ACE153B4e0767942f1E2291a1Aa",
                "createdFromOwnerAddress": "0x49d4450977E2c95362C13D3a31a09311E0Ea26A6"
            },
            "transactions": [
                {
                    "to": "0x49d4450977E2c95362C13D3a31a09311E0Ea26A6",
                    "value": "0",
                    "contractMethod": {
                        "inputs": [{ "internalType": "address", "name": "paramAddress", "type": "address" }],
                        "name": "testAddress",
                        "payable": false
                    },
                    "contractInputsValues": { "paramAddress": "0x49d4450977E2c95362C13D3a31a09311E0Ea26A6" }
                },
                {
                    "to": "0x49d4450977E2c95362C13D3a31a09311E0Ea26A6",
                    "value": "0",
                    "contractMethod": {
                        "inputs": [{ "internalType": "bool", "name": "paramBool", "type": "bool" }],
                        "name": "testBool",
                        "payable": false
                    },
                    "contractInputsValues": { "paramAddress": "", "paramBool": "false" }
                },
                {
                    "to": "0x49d4450977E2c95362C13D3a31a09311E0Ea26A6",
                    "value": "2000000000000000000",
                    "data": "0x42f4579000000000000000000000000049d4450977e2c95362c13d3a31a09311e0ea26a6"
                }
            ]
        });
        assert_eq!(
            checksum_of(&file).to_string(),
            "0x4ecbfd364aa6759983915644e73f8bd411e85a2dc306f252a387c2728c4db64c"
        );
    }

    #[test]
    fn a_written_batch_checks_and_any_change_but_its_name_breaks_the_checksum() {
        let (safe, module) = (Address::repeat_byte(1), Address::repeat_byte(2));
        let actions = [AdminAction::SetRoot { root: Address::repeat_byte(3) }];
        let file = enable_module_batch(31337, safe, module, &actions, 1_700_000_000_000);
        let text = serde_json::to_string_pretty(&file).unwrap();
        let read: BatchFile = serde_json::from_str(&text).unwrap();
        assert!(read.checksum_ok());
        let mut renamed = read.clone();
        renamed.meta.name = "another name".into();
        assert!(renamed.checksum_ok(), "the name is not covered");
        let mut changed = read.clone();
        changed.transactions.swap(0, 1);
        assert!(!changed.checksum_ok());
        let mut value: Value = serde_json::from_str(&text).unwrap();
        assert!(value["transactions"][0]["data"].is_null(), "a method call carries no raw data");
        value["meta"]["checksum"] = Value::String(String::new());
        assert_ne!(checksum_of(&value).to_string(), file.meta.checksum.clone().unwrap());
    }

    #[test]
    fn a_method_call_is_encoded_from_its_input_strings() {
        let module = Address::repeat_byte(2);
        let action =
            AdminAction::SetBudget { token: Address::repeat_byte(4), limit: U256::from(10), period: 60 };
        let tx = BatchTransaction::configure(module, &action);
        let expected = TreasuryModule::configureCall { action: 4, params: action.params() }.abi_encode();
        assert_eq!(tx.calldata().unwrap().as_ref(), expected.as_slice());
        let enable = BatchTransaction::enable_module(Address::repeat_byte(1), module);
        let expected = ISafe::enableModuleCall { module }.abi_encode();
        assert_eq!(enable.calldata().unwrap().as_ref(), expected.as_slice());
    }

    #[test]
    fn one_call_is_sent_as_is_and_several_through_multisend_by_delegatecall() {
        let (safe, module, multisend) =
            (Address::repeat_byte(1), Address::repeat_byte(2), Address::repeat_byte(9));
        let one = configure_batch(1, safe, module, &[AdminAction::Pause], 0);
        let tx = one.safe_tx(multisend).unwrap();
        assert_eq!((tx.to, tx.operation), (module, 0));
        let two = enable_module_batch(1, safe, module, &[AdminAction::Pause], 0);
        let tx = two.safe_tx(multisend).unwrap();
        assert_eq!((tx.to, tx.operation), (multisend, 1));
        let packed = IMultiSend::multiSendCall::abi_decode(&tx.data).unwrap().transactions;
        let first = two.transactions[0].calldata().unwrap();
        assert_eq!(packed[0], 0);
        assert_eq!(&packed[1..21], module.as_slice());
        assert_eq!(&packed[85..85 + first.len()], first.as_ref());
    }
}
