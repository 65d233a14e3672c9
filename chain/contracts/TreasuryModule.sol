// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {FrostVerifier} from "./FrostVerifier.sol";

/// @notice The part of the Safe (v1.4.1 / v1.5.0) interface the module uses.
interface ISafeModuleTarget {
    /// @dev `operation`: 0 CALL, 1 DELEGATECALL (Safe's Enum.Operation).
    function execTransactionFromModuleReturnData(address to, uint256 value, bytes calldata data, uint8 operation)
        external
        returns (bool success, bytes memory returnData);

    function execTransactionFromModule(address to, uint256 value, bytes calldata data, uint8 operation)
        external
        returns (bool success);
}

/// @notice Safe's MultiSendCallOnly library (1.4.1 / 1.5.0): packed (uint8 operation, address to,
///         uint256 value, uint256 dataLength, bytes data) entries, operation 0 only.
interface IMultiSendCallOnly {
    function multiSend(bytes calldata transactions) external payable;
}

/// @title TreasuryModule
/// @notice A Safe module executing batches of calls from the Safe when authorised by a FROST
///         threshold signature (tier 1, restricted) or by FROST plus the root key (tier 2).
/// @dev Authorisation tiers:
///      - Tier 1 (FROST alone): plain calls only; ERC-20 `approve`/`increaseAllowance` only to
///        allow-listed spenders; every other call must hit an allow-listed (target, selector) pair,
///        except empty calldata to an address without code (ETH to an EOA). Calldata shorter than 4
///        bytes has the zero-padded selector (e.g. allow (target, 0x00000000) for ETH to a contract's
///        `receive`). The Safe's net outflow of each tracked asset (ETH = address(0)), measured as
///        balance before minus after the whole batch, is charged to that asset's budget for the
///        current period (fixed windows `block.timestamp / period`). Only the assets the batch can
///        make the Safe lose are measured (see `_execTier1` for the rule and why it is sound).
///      - Tier 2 (FROST + root ECDSA signature over the same digest): no restrictions, no budget
///        charge (the root signer's own guard is the limit).
///      Admin: root alone may change any setting; changes that widen power are queued behind a
///      timelock that the root, the FROST quorum or the Safe can cancel; changes that narrow power
///      apply at once. The FROST quorum alone may pause and cancel. The Safe may change anything at
///      once through `configure` (its owners can remove the module anyway).
///
///      Execution: a batch of two or more plain calls enters the Safe once, as a DELEGATECALL of
///      the Safe's own MultiSendCallOnly (an immutable set at deployment, not an input) carrying
///      exactly the checked calls; otherwise one module transaction per call (see `_execute`).
///
///      Security: all signed messages are EIP-712 digests under the domain
///      (name "TreasuryModule", version "1", chainId, this address); nonces are sequential so a
///      signature is usable once. The digests MUST match `chain/src/operation.rs`.
contract TreasuryModule {
    // ─────────────────────────────────────────────────────────────── types

    /// @notice One call made by the Safe. `operation`: 0 CALL, 1 DELEGATECALL (tier 2 only).
    struct Call {
        address to;
        uint256 value;
        bytes data;
        uint8 operation;
    }

    /// @notice A change of settings, signed by the root (any action) or the quorum (PAUSE, CANCEL).
    struct AdminOp {
        uint8 action;
        bytes params;
        uint256 nonce;
        uint256 deadline;
    }

    /// @notice A FROST signature: R uncompressed (decompressed off-chain) and the scalar z.
    struct FrostSig {
        uint256 rX;
        uint256 rY;
        uint256 z;
    }

    // ─────────────────────────────────────────────────────────────── actions

    uint8 public constant PAUSE = 0;
    uint8 public constant UNPAUSE = 1;
    uint8 public constant SET_GROUP_KEY = 2;
    uint8 public constant SET_ROOT = 3;
    uint8 public constant SET_BUDGET = 4;
    uint8 public constant SET_CALL_ALLOWED = 5;
    uint8 public constant SET_SPENDER_ALLOWED = 6;
    uint8 public constant SET_TIMELOCK = 7;
    uint8 public constant CANCEL = 8;

    /// @notice At most this many tracked ERC-20s, besides ETH (bounds the gas of a tier-1 `exec`).
    uint256 public constant MAX_TRACKED_ASSETS = 32;

    // ─────────────────────────────────────────────────────────────── errors and events

    error ModulePaused();
    error Expired(uint256 deadline, uint256 nowTs);
    error BadNonce(uint256 expected, uint256 got);
    error InvalidFrostSignature();
    error InvalidRootSignature();
    error DelegateCallNotAllowed(uint256 index);
    error SpenderNotAllowed(uint256 index, address spender);
    error CallNotAllowed(uint256 index, address target, bytes4 selector);
    error BudgetExceeded(address token, uint256 outflow, uint256 remaining);
    error CallFailed(uint256 index, bytes reason);
    error BalanceQueryFailed(address token);
    error Unauthorized();
    error UnknownAction(uint8 action);
    error NotSafe();
    error InvalidGroupKey();
    error InvalidParams();
    error TooManyTrackedAssets();
    error ChangeNotQueued(bytes32 id);
    error ChangeNotReady(bytes32 id, uint256 eta);
    error Reentrancy();

    event Executed(uint256 indexed nonce, bytes32 indexed digest, uint8 tier, uint256 calls);
    event ChangeQueued(bytes32 indexed id, uint8 action, bytes params, uint256 eta);
    event ChangeApplied(uint8 action, bytes params);
    event ChangeCancelled(bytes32 indexed id);
    /// @param by the root address (root-signed), this module's address (quorum-signed), the Safe
    ///        (`configure`) or the caller of `applyChange`.
    event Paused(address by);
    event Unpaused();

    // ─────────────────────────────────────────────────────────────── EIP-712

    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant NAME_HASH = keccak256("TreasuryModule");
    bytes32 private constant VERSION_HASH = keccak256("1");
    bytes32 private constant CALL_TYPEHASH = keccak256("Call(address to,uint256 value,bytes data,uint8 operation)");
    bytes32 private constant OPERATION_TYPEHASH = keccak256(
        "Operation(Call[] calls,uint256 nonce,uint256 deadline)Call(address to,uint256 value,bytes data,uint8 operation)"
    );
    bytes32 private constant ADMIN_TYPEHASH =
        keccak256("AdminOp(uint8 action,bytes params,uint256 nonce,uint256 deadline)");

    uint256 private constant HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;
    bytes4 private constant TRANSFER = 0xa9059cbb;
    bytes4 private constant APPROVE = 0x095ea7b3;
    bytes4 private constant INCREASE_ALLOWANCE = 0x39509351;

    // ─────────────────────────────────────────────────────────────── storage

    /// @dev Packed hot state, one slot:
    ///      bits 0..63 nonce | 64..95 adminNonce | 96..127 timelockDelay | 128..135 group key parity
    ///      | 136..143 paused | 144..151 number of tracked ERC-20s | 152..199 ETH budget period
    ///      (0 = ETH untracked) | 200..247 ETH budget window (period index `block.timestamp / period`).
    uint256 private _state;
    uint256 private _groupKeyX;
    address private _root;
    mapping(bytes32 id => uint256 eta) private _queued;
    /// @dev Keyed by `_callKey(target, selector)`. The source of truth of the call allow-list; for a
    ///      tracked ERC-20 the (token, transfer) entry is mirrored in its `_tokenConfig` bit.
    mapping(bytes32 key => bool) private _callAllowed;
    mapping(address spender => bool) private _spenderAllowed;
    /// @dev Tracked ERC-20 number i, in tracking order (a token, once tracked, stays tracked).
    mapping(uint256 index => address) private _tokenAt;
    /// @dev Settings of an ERC-20, read once by a tier-1 batch paying it: limit (bits 0..127) | period
    ///      (128..175) | 1 + its index in `_tokenAt` (176..183; 0 = untracked, the whole slot is then 0)
    ///      | (token, transfer) allow-listed (bit 184, a copy of `_callAllowed` kept in sync by
    ///      `_setCallAllowed` and `_setBudget`: one cold SLOAD per paid token instead of two).
    mapping(address token => uint256) private _tokenConfig;
    /// @dev Use of a tracked ERC-20's budget: spent (bits 0..127) in window (128..175) | bit 255 always
    ///      set, so a charge is never a zero→non-zero write. Rewritten by every charge.
    mapping(address token => uint256) private _tokenSpent;
    /// @dev ETH budget amounts: limit (bits 0..127) | spent in the window stored in `_state` (128..255).
    ///      The limit keeps the slot non-zero, so a charge is never a zero→non-zero write.
    uint256 private _ethAmounts;

    uint256 private constant ADMIN_NONCE_SHIFT = 64;
    uint256 private constant DELAY_SHIFT = 96;
    uint256 private constant PARITY_SHIFT = 128;
    uint256 private constant PAUSED_SHIFT = 136;
    uint256 private constant COUNT_SHIFT = 144;
    uint256 private constant ETH_PERIOD_SHIFT = 152;
    uint256 private constant ETH_WINDOW_SHIFT = 200;
    uint256 private constant CFG_PERIOD_SHIFT = 128;
    uint256 private constant CFG_INDEX_SHIFT = 176;
    uint256 private constant CFG_TRANSFER_BIT = 1 << 184;
    uint256 private constant SPENT_WINDOW_SHIFT = 128;
    uint256 private constant SPENT_MARKER = 1 << 255;
    uint256 private constant U32 = 0xffffffff;
    uint256 private constant U48 = 0xffffffffffff;
    uint256 private constant U64 = 0xffffffffffffffff;
    uint256 private constant U128 = 0xffffffffffffffffffffffffffffffff;
    /// @dev Transient slot of the reentrancy lock.
    uint256 private constant LOCK_SLOT = uint256(keccak256("treasury.module.lock")) - 1;

    /// @notice The Safe this module executes from.
    address public immutable safe;
    /// @notice Safe's `MultiSendCallOnly` library (address(0): disabled). Batches of two or more plain
    ///         calls enter the Safe once, as one DELEGATECALL of `multiSend` made by this module (see
    ///         `_executeBatch`); set at deployment only, never chosen by a caller.
    address public immutable multiSendCallOnly;
    uint256 private immutable _deployChainId;
    bytes32 private immutable _deployDomainSeparator;

    /// @param multiSendCallOnly_ the Safe deployment's MultiSendCallOnly (1.4.1 / 1.5.0), or
    ///        address(0) to make every call its own Safe entry (e.g. behind a module guard that refuses
    ///        DELEGATECALL: batches would still execute, through the per-call fallback, but pay twice).
    constructor(
        address safe_,
        uint256 groupKeyX,
        uint8 groupKeyParity,
        address root_,
        uint64 timelockDelay_,
        address multiSendCallOnly_
    ) {
        if (safe_ == address(0) || timelockDelay_ > U32) revert InvalidParams();
        if (multiSendCallOnly_ != address(0) && multiSendCallOnly_.code.length == 0) revert InvalidParams();
        if (!FrostVerifier.isValidKey(groupKeyX, groupKeyParity)) revert InvalidGroupKey();
        safe = safe_;
        multiSendCallOnly = multiSendCallOnly_;
        _groupKeyX = groupKeyX;
        _root = root_;
        _state = (uint256(timelockDelay_) << DELAY_SHIFT) | (uint256(groupKeyParity) << PARITY_SHIFT);
        _deployChainId = block.chainid;
        _deployDomainSeparator = _buildDomainSeparator();
    }

    // ─────────────────────────────────────────────────────────────── exec

    /// @notice Executes `calls` from the Safe, authorised by the FROST quorum (tier 1) or by the
    ///         quorum and the root together (tier 2, `rootSig` non-empty).
    /// @param calls the batch, executed in order; any failure reverts the whole batch.
    /// @param nonce must equal `nonce()`; incremented on success.
    /// @param deadline last valid `block.timestamp`.
    /// @param sig FROST signature over `operationDigest(calls, nonce, deadline)`.
    /// @param rootSig empty (tier 1) or the root's 65-byte (r, s, v) ECDSA signature over the same
    ///        digest, v ∈ {27, 28}, low s (tier 2).
    function exec(
        Call[] calldata calls,
        uint256 nonce,
        uint256 deadline,
        FrostSig calldata sig,
        bytes calldata rootSig
    ) external {
        uint256 st = _state;
        if ((st >> PAUSED_SHIFT) & 0xff != 0) revert ModulePaused();
        if (block.timestamp > deadline) revert Expired(deadline, block.timestamp);
        if (nonce != st & U64) revert BadNonce(st & U64, nonce);
        bytes32 digest = _operationDigest(calls, nonce, deadline);
        if (!FrostVerifier.verify(_groupKeyX, uint8(st >> PARITY_SHIFT), digest, sig.rX, sig.rY, sig.z)) {
            revert InvalidFrostSignature();
        }
        uint8 tier = 1;
        if (rootSig.length != 0) {
            if (!_isRootSig(digest, rootSig)) revert InvalidRootSignature();
            tier = 2;
        }
        _lock();
        _state = st + 1; // nonce: the low 64 bits (2^64 executions will not happen)
        if (tier == 2) {
            _execute(calls);
        } else {
            _execTier1(calls, st);
        }
        _unlock();
        emit Executed(nonce, digest, tier, calls.length);
    }

    /// @dev Tier 1: every call checked first (a refused call reverts the whole batch, and the rules
    ///      are those in force when the batch starts), then the balances of the assets that can lose
    ///      value, the calls, the balances again, outflows charged.
    ///
    ///      Which assets are measured (selective measurement). If every call of the batch is either
    ///      (a) `transfer`, `approve` or `increaseAllowance` on a tracked ERC-20, with value 0, or
    ///      (b) empty calldata to an address without code (ETH to an EOA),
    ///      only the ERC-20s named in (a), and ETH if some call in (b) carries value, are measured.
    ///      Otherwise (any call to another contract: the router, an untracked token, the Safe, any
    ///      call with value to a contract) every tracked asset is measured, as before.
    ///      Why the narrowing is sound: the Safe's balance of a token T can only fall by code that
    ///      runs in T with the Safe as the owner of the balance, i.e. T called by the Safe or by a
    ///      holder of a Safe allowance on T; its ETH only by a CALL with value made from the Safe's
    ///      own context. In a batch of (a)/(b) calls the only code the Safe runs is: the named tokens
    ///      (a tracked token is vetted by the root or the Safe, and its `transfer`/`approve`/
    ///      `increaseAllowance` move only that token; the budget already trusts its `balanceOf`), and
    ///      nothing at all for (b) (no code; ETH leaves only there, and only if value > 0). A third
    ///      contract reached from a token's hook runs as itself, not as the Safe: it can pull a
    ///      tracked token only through an allowance the Safe already gave it, which it can use just
    ///      as well in a transaction of its own, outside any batch, so measuring it inside this batch
    ///      never bounded it (tier 1 itself can only grant allowances to allow-listed spenders, and
    ///      the Uniswap router pulls from its caller only). Calls of any other kind keep the full
    ///      measurement; tests: `test_selective_*`.
    function _execTier1(Call[] calldata calls, uint256 st) private {
        uint256 n = calls.length;
        uint256 count = (st >> COUNT_SHIFT) & 0xff;
        address[] memory toks = new address[](count);
        uint256 k; // entries of `toks` in use
        uint256 seen; // bit j set: tracked ERC-20 number j is in `toks`
        bool all; // measure every tracked asset
        bool eth; // measure ETH
        for (uint256 i; i < n; ++i) {
            (address to, uint256 cls) = _checkTier1(calls, i);
            if (cls == MEASURE_ETH) {
                eth = true;
            } else if (cls == MEASURE_ALL) {
                all = true;
            } else if (cls != MEASURE_NOTHING) {
                uint256 bit = 1 << (cls - MEASURE_TOKEN);
                if (seen & bit == 0) {
                    seen |= bit;
                    toks[k++] = to;
                }
            }
        }
        if (all) {
            for (uint256 j; j < count; ++j) {
                toks[j] = _tokenAt[j];
            }
            k = count;
            eth = true;
        }
        eth = eth && (st >> ETH_PERIOD_SHIFT) & U48 != 0;
        address s = safe;
        uint256 ethBefore = eth ? s.balance : 0;
        uint256[] memory before = new uint256[](k);
        for (uint256 j; j < k; ++j) {
            before[j] = _balance(toks[j]);
        }
        _execute(calls);
        if (eth) {
            uint256 ethAfter = s.balance;
            if (ethAfter < ethBefore) _chargeEth(ethBefore - ethAfter);
        }
        for (uint256 j; j < k; ++j) {
            address t = toks[j];
            uint256 afterBal = _balance(t);
            uint256 b = before[j];
            if (afterBal < b) _chargeToken(t, b - afterBal);
        }
    }

    uint256 private constant MEASURE_NOTHING = 0;
    uint256 private constant MEASURE_ETH = 1;
    uint256 private constant MEASURE_ALL = 2;
    /// @dev `MEASURE_TOKEN + j`: tracked ERC-20 number j (its address is the call's target).
    uint256 private constant MEASURE_TOKEN = 3;

    /// @dev The tier-1 rules for `calls[i]` (reverts if refused), and what the call may make the Safe
    ///      lose (see `_execTier1`): `cls` is one of the MEASURE_* classes.
    function _checkTier1(Call[] calldata calls, uint256 i) private view returns (address to, uint256 cls) {
        (address target, uint256 value, uint256 op, uint256 dataOffset, uint256 len) = _field(calls, i);
        to = target;
        if (op != 0) revert DelegateCallNotAllowed(i);
        if (len == 0 && to.code.length == 0) {
            // empty calldata to an address without code: ETH to an EOA
            return (to, value != 0 ? MEASURE_ETH : MEASURE_NOTHING);
        }
        bytes4 sel;
        address spender;
        assembly ("memory-safe") {
            // bytes4(data): the first min(len, 4) bytes, zero-padded
            let keep := 4
            if lt(len, 4) { keep := len }
            sel := and(calldataload(dataOffset), not(shr(shl(3, keep), not(0))))
            spender := and(calldataload(add(dataOffset, 4)), 0xffffffffffffffffffffffffffffffffffffffff)
        }
        if (sel == TRANSFER || sel == APPROVE || sel == INCREASE_ALLOWANCE) {
            uint256 cfg = _tokenConfig[to];
            if (sel == TRANSFER) {
                bool allowed = cfg != 0 ? cfg & CFG_TRANSFER_BIT != 0 : _callAllowed[_callKey(to, sel)];
                if (!allowed) revert CallNotAllowed(i, to, sel);
            } else {
                if (len < 36) revert CallNotAllowed(i, to, sel);
                if (!_spenderAllowed[spender]) revert SpenderNotAllowed(i, spender);
            }
            if (cfg == 0 || value != 0) return (to, MEASURE_ALL);
            return (to, MEASURE_TOKEN - 1 + ((cfg >> CFG_INDEX_SHIFT) & 0xff));
        }
        if (!_callAllowed[_callKey(to, sel)]) revert CallNotAllowed(i, to, sel);
        return (to, MEASURE_ALL);
    }

    /// @dev The fields of `calls[i]`, read from calldata in assembly with the checks the Solidity
    ///      accessors make (offsets and lengths inside calldata, clean address, operation fits uint8):
    ///      malformed calldata reverts (empty reason) before any call is made. `_operationDigest`
    ///      reads the same words, so what is executed is what was signed.
    function _field(Call[] calldata calls, uint256 i)
        private
        pure
        returns (address to, uint256 value, uint256 op, uint256 dataOffset, uint256 len)
    {
        assembly ("memory-safe") {
            let rel := calldataload(add(calls.offset, shl(5, i)))
            let p := add(calls.offset, rel)
            let t := calldataload(p)
            op := calldataload(add(p, 0x60))
            let drel := calldataload(add(p, 0x40))
            let d := add(p, drel)
            len := calldataload(d)
            dataOffset := add(d, 0x20)
            if or(
                or(or(gt(rel, U64), gt(drel, U64)), or(shr(160, t), gt(op, 0xff))),
                or(gt(len, U64), or(gt(add(p, 0x80), calldatasize()), gt(add(dataOffset, len), calldatasize())))
            ) { revert(0, 0) }
            to := t
            value := calldataload(add(p, 0x20))
        }
    }

    /// @dev Key of an allow-listed (target, selector) pair: target ‖ selector, no hashing needed.
    function _callKey(address target, bytes4 selector) private pure returns (bytes32) {
        return bytes32(uint256(uint160(target)) << 96 | uint256(uint32(selector)));
    }

    /// @dev Makes the Safe execute `calls`, in order, all or nothing: one Safe entry for a batch of
    ///      two or more plain calls (`_executeBatch`), else one `execTransactionFromModuleReturnData`
    ///      per call. If the batch entry fails, the Safe has undone it entirely (the DELEGATECALL
    ///      reverted inside the Safe) and the calls are replayed one by one, so a failure still
    ///      reverts with `CallFailed(index, reason)` of the call that fails.
    function _execute(Call[] calldata calls) private {
        uint256 n = calls.length;
        if (n > 1 && multiSendCallOnly != address(0) && _executeBatch(calls, n)) return;
        for (uint256 i; i < n; ++i) {
            _call(calls, i);
        }
    }

    /// @dev One Safe entry for the whole batch: `execTransactionFromModule(multiSendCallOnly, 0,
    ///      multiSend(packed calls), DELEGATECALL)`. The DELEGATECALL target is this module's immutable
    ///      library, never an input; the packed calls are exactly the (already checked) calls, each
    ///      with operation CALL, and MultiSendCallOnly refuses any DELEGATECALL entry anyway. It reverts
    ///      on the first failing call with that call's revert data.
    ///      Not used (returns false) if a call is a DELEGATECALL (tier 2) or targets address(0)
    ///      (MultiSendCallOnly would turn it into a call to the Safe itself). Returns false as well if
    ///      the entry failed (nothing executed): the caller then replays the calls one by one.
    function _executeBatch(Call[] calldata calls, uint256 n) private returns (bool ok) {
        address s = safe;
        address ms = multiSendCallOnly;
        bytes4 entrySel = ISafeModuleTarget.execTransactionFromModule.selector;
        bytes4 multiSendSel = IMultiSendCallOnly.multiSend.selector;
        assembly ("memory-safe") {
            // m: execTransactionFromModule(to, value, data, operation) calldata; the packed calls
            // (op ‖ to ‖ value ‖ data length ‖ data, 85 + len bytes each) start at m + 0xe8.
            let m := mload(0x40)
            let ptr := add(m, 0xe8)
            ok := 1
            for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                // the same reads and checks as `_field`
                let rel := calldataload(add(calls.offset, shl(5, i)))
                let p := add(calls.offset, rel)
                let to := calldataload(p)
                let op := calldataload(add(p, 0x60))
                let drel := calldataload(add(p, 0x40))
                let d := add(p, drel)
                let len := calldataload(d)
                if or(
                    or(or(gt(rel, U64), gt(drel, U64)), or(shr(160, to), gt(op, 0xff))),
                    or(gt(len, U64), or(gt(add(p, 0x80), calldatasize()), gt(add(add(d, 0x20), len), calldatasize())))
                ) { revert(0, 0) }
                if or(op, iszero(to)) {
                    ok := 0
                    break
                }
                mstore(ptr, shl(88, to)) // operation 0 ‖ to
                mstore(add(ptr, 21), calldataload(add(p, 0x20)))
                mstore(add(ptr, 53), len)
                calldatacopy(add(ptr, 85), add(d, 0x20), len)
                ptr := add(ptr, add(85, len))
            }
            if ok {
                let inner := sub(ptr, add(m, 0xe8))
                let padded := and(add(inner, 31), not(31))
                mstore(ptr, 0)
                mstore(add(add(m, 0xe8), padded), 0)
                mstore(m, entrySel)
                mstore(add(m, 0x04), ms)
                mstore(add(m, 0x24), 0)
                mstore(add(m, 0x44), 0x80)
                mstore(add(m, 0x64), 1) // DELEGATECALL
                mstore(add(m, 0x84), add(0x44, padded)) // length of multiSend(bytes) calldata
                mstore(add(m, 0xa4), multiSendSel)
                mstore(add(m, 0xa8), 0x20)
                mstore(add(m, 0xc8), inner)
                mstore(0x00, 0)
                let success := call(gas(), s, 0, m, add(0x104, padded), 0x00, 0x20)
                let result := mload(0x00)
                // A revert of the entry or `false` (the DELEGATECALL failed): the Safe undid
                // everything, so the per-call replay is safe. Anything but a clean `true` or `false`
                // is not a Safe answer: revert rather than risk executing the batch twice.
                ok := 0
                if success {
                    if or(lt(returndatasize(), 0x20), gt(result, 1)) { revert(0, 0) }
                    ok := result
                }
            }
        }
    }

    /// @dev Makes the Safe execute `calls[i]` (assembly: the per-call hot path). The plain entry
    ///      `execTransactionFromModule` is cheaper (no copy of the return data); if the call fails, the
    ///      Safe has undone it and it is made once more through `execTransactionFromModuleReturnData`,
    ///      only to get the reason of `CallFailed` (should it succeed this time, it has executed once).
    function _call(Call[] calldata calls, uint256 i) private {
        if (_safeEntry(calls, i, ISafeModuleTarget.execTransactionFromModule.selector)) return;
        if (_safeEntry(calls, i, ISafeModuleTarget.execTransactionFromModuleReturnData.selector)) return;
        bytes memory ret;
        assembly ("memory-safe") {
            ret := mload(0x40)
            mstore(ret, returndatasize())
            returndatacopy(add(ret, 0x20), 0, returndatasize())
            mstore(0x40, add(add(ret, 0x20), and(add(returndatasize(), 31), not(31))))
        }
        bytes memory reason;
        if (ret.length >= 0x40) (, reason) = abi.decode(ret, (bool, bytes));
        revert CallFailed(i, reason);
    }

    /// @dev One Safe entry `selector(to, value, data, operation)` for `calls[i]`; bubbles a revert of
    ///      the Safe itself (e.g. module not enabled); returns the Safe's success flag.
    function _safeEntry(Call[] calldata calls, uint256 i, bytes4 selector) private returns (bool ok) {
        (address to, uint256 value, uint256 op, uint256 dataOffset, uint256 len) = _field(calls, i);
        address s = safe;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, selector)
            mstore(add(m, 0x04), to)
            mstore(add(m, 0x24), value)
            mstore(add(m, 0x44), 0x80)
            mstore(add(m, 0x64), op)
            mstore(add(m, 0x84), len)
            calldatacopy(add(m, 0xa4), dataOffset, len)
            mstore(add(add(m, 0xa4), len), 0) // zero padding
            let size := add(0xa4, and(add(len, 31), not(31)))
            mstore(0x00, 0)
            if iszero(call(gas(), s, 0, m, size, 0x00, 0x20)) {
                returndatacopy(m, 0, returndatasize())
                revert(m, returndatasize())
            }
            ok := and(gt(returndatasize(), 0x1f), eq(mload(0x00), 1))
        }
    }

    /// @dev The Safe's balance of ERC-20 `token`. Reverts if `balanceOf` fails.
    function _balance(address token) private view returns (uint256 b) {
        address s = safe;
        bytes4 err = BalanceQueryFailed.selector;
        assembly ("memory-safe") {
            mstore(0x00, shl(224, 0x70a08231)) // balanceOf(address)
            mstore(0x04, s)
            let ok := staticcall(gas(), token, 0x00, 0x24, 0x00, 0x20)
            if iszero(and(ok, gt(returndatasize(), 0x1f))) {
                mstore(0x00, err)
                mstore(0x04, token)
                revert(0x00, 0x24)
            }
            b := mload(0x00)
        }
    }

    /// @dev Charges an ETH outflow to the current period of the ETH budget.
    function _chargeEth(uint256 outflow) private {
        uint256 st = _state;
        uint256 window = block.timestamp / ((st >> ETH_PERIOD_SHIFT) & U48);
        uint256 amounts = _ethAmounts;
        uint256 storedWindow = (st >> ETH_WINDOW_SHIFT) & U48;
        uint256 spent = storedWindow == window ? amounts >> 128 : 0;
        _checkBudget(address(0), amounts & U128, spent, outflow);
        if (storedWindow != window) _state = (st & ~(U48 << ETH_WINDOW_SHIFT)) | (window << ETH_WINDOW_SHIFT);
        _ethAmounts = (amounts & U128) | ((spent + outflow) << 128);
    }

    /// @dev Charges an outflow of tracked ERC-20 `token` to its current period (settings re-read:
    ///      warm if the batch paid it, and current if the batch changed them).
    function _chargeToken(address token, uint256 outflow) private {
        uint256 cfg = _tokenConfig[token];
        uint256 window = block.timestamp / ((cfg >> CFG_PERIOD_SHIFT) & U48);
        uint256 used = _tokenSpent[token];
        uint256 spent = (used >> SPENT_WINDOW_SHIFT) & U48 == window ? used & U128 : 0;
        _checkBudget(token, cfg & U128, spent, outflow);
        // spent + outflow ≤ limit < 2^128
        _tokenSpent[token] = SPENT_MARKER | (window << SPENT_WINDOW_SHIFT) | (spent + outflow);
    }

    function _checkBudget(address token, uint256 limit, uint256 spent, uint256 outflow) private pure {
        uint256 remaining = spent < limit ? limit - spent : 0;
        if (outflow > remaining) revert BudgetExceeded(token, outflow, remaining);
    }

    function _lock() private {
        uint256 slot = LOCK_SLOT;
        bytes4 err = Reentrancy.selector;
        assembly ("memory-safe") {
            if tload(slot) {
                mstore(0x00, err)
                revert(0x00, 0x04)
            }
            tstore(slot, 1)
        }
    }

    function _unlock() private {
        uint256 slot = LOCK_SLOT;
        assembly ("memory-safe") {
            tstore(slot, 0)
        }
    }

    // ─────────────────────────────────────────────────────────────── admin

    /// @notice Applies or queues a change of settings. Authorised by a valid root signature
    ///         (any action; widening changes are queued behind the timelock) or else by a valid FROST
    ///         signature for PAUSE and CANCEL. Both signatures are over `adminDigest(op)`.
    function admin(AdminOp calldata op, FrostSig calldata frostSig, bytes calldata rootSig) external {
        uint8 action = op.action;
        if (action > CANCEL) revert UnknownAction(action);
        if (block.timestamp > op.deadline) revert Expired(op.deadline, block.timestamp);
        uint256 st = _state;
        uint256 expected = (st >> ADMIN_NONCE_SHIFT) & U32;
        if (op.nonce != expected) revert BadNonce(expected, op.nonce);
        bytes32 digest = _adminDigest(op);
        bool byRoot = rootSig.length != 0 && _isRootSig(digest, rootSig);
        if (!byRoot) {
            if (action != PAUSE && action != CANCEL) revert Unauthorized();
            if (!FrostVerifier.verify(_groupKeyX, uint8(st >> PARITY_SHIFT), digest, frostSig.rX, frostSig.rY, frostSig.z))
            {
                revert Unauthorized();
            }
        }
        _state = st + (1 << ADMIN_NONCE_SHIFT);
        if (byRoot && _isWidening(action, op.params)) {
            bytes32 id = keccak256(abi.encode(action, op.params, op.nonce));
            uint256 eta = block.timestamp + ((st >> DELAY_SHIFT) & U32);
            _queued[id] = eta;
            emit ChangeQueued(id, action, op.params, eta);
        } else {
            _apply(action, op.params, byRoot ? _root : address(this));
        }
    }

    /// @notice Applies a queued change once its timelock has passed. Callable by anyone.
    /// @param nonce the admin nonce of the AdminOp that queued it.
    function applyChange(uint8 action, bytes calldata params, uint256 nonce) external {
        bytes32 id = keccak256(abi.encode(action, params, nonce));
        uint256 eta = _queued[id];
        if (eta == 0) revert ChangeNotQueued(id);
        if (block.timestamp < eta) revert ChangeNotReady(id, eta);
        delete _queued[id];
        _apply(action, params, msg.sender);
    }

    /// @notice Applies any action immediately. Only the Safe itself (a Safe transaction).
    function configure(uint8 action, bytes calldata params) external {
        if (msg.sender != safe) revert NotSafe();
        if (action > CANCEL) revert UnknownAction(action);
        _apply(action, params, msg.sender);
    }

    /// @dev Whether `action` with `params` widens the power of the quorum or the root.
    function _isWidening(uint8 action, bytes calldata params) private view returns (bool) {
        if (action == SET_GROUP_KEY || action == SET_ROOT) return true;
        if (action == SET_BUDGET) {
            (address token, uint256 limit, uint64 period) = abi.decode(params, (address, uint256, uint64));
            (bool tracked, uint256 oldLimit, uint256 oldPeriod,) = _budgetOf(token);
            if (!tracked) return false; // a new tracked asset narrows
            return limit > oldLimit || period < oldPeriod;
        }
        if (action == SET_CALL_ALLOWED) {
            (,, bool allowed) = abi.decode(params, (address, bytes4, bool));
            return allowed;
        }
        if (action == SET_SPENDER_ALLOWED) {
            (, bool allowed) = abi.decode(params, (address, bool));
            return allowed;
        }
        if (action == SET_TIMELOCK) {
            uint64 delay = abi.decode(params, (uint64));
            return delay < ((_state >> DELAY_SHIFT) & U32);
        }
        return false; // PAUSE, UNPAUSE, CANCEL
    }

    function _apply(uint8 action, bytes calldata params, address by) private {
        if (action == PAUSE) {
            _state |= 1 << PAUSED_SHIFT;
            emit Paused(by);
        } else if (action == UNPAUSE) {
            _state &= ~(uint256(0xff) << PAUSED_SHIFT);
            emit Unpaused();
        } else if (action == SET_GROUP_KEY) {
            (uint256 x, uint8 parity) = abi.decode(params, (uint256, uint8));
            if (!FrostVerifier.isValidKey(x, parity)) revert InvalidGroupKey();
            _groupKeyX = x;
            _state = (_state & ~(uint256(0xff) << PARITY_SHIFT)) | (uint256(parity) << PARITY_SHIFT);
        } else if (action == SET_ROOT) {
            _root = abi.decode(params, (address));
        } else if (action == SET_BUDGET) {
            (address token, uint256 limit, uint64 period) = abi.decode(params, (address, uint256, uint64));
            _setBudget(token, limit, period);
        } else if (action == SET_CALL_ALLOWED) {
            (address target, bytes4 selector, bool allowed) = abi.decode(params, (address, bytes4, bool));
            _setCallAllowed(target, selector, allowed);
        } else if (action == SET_SPENDER_ALLOWED) {
            (address spender, bool allowed) = abi.decode(params, (address, bool));
            _spenderAllowed[spender] = allowed;
        } else if (action == SET_TIMELOCK) {
            uint64 delay = abi.decode(params, (uint64));
            if (delay > U32) revert InvalidParams();
            _state = (_state & ~(U32 << DELAY_SHIFT)) | (uint256(delay) << DELAY_SHIFT);
        } else if (action == CANCEL) {
            bytes32 id = abi.decode(params, (bytes32));
            if (_queued[id] == 0) revert ChangeNotQueued(id);
            delete _queued[id];
            emit ChangeCancelled(id);
        } else {
            revert UnknownAction(action);
        }
        emit ChangeApplied(action, params);
    }

    /// @dev Sets an allow-list entry, and its mirror bit if it is (tracked ERC-20, transfer).
    function _setCallAllowed(address target, bytes4 selector, bool allowed) private {
        _callAllowed[_callKey(target, selector)] = allowed;
        if (selector == TRANSFER) {
            uint256 cfg = _tokenConfig[target];
            if (cfg != 0) _tokenConfig[target] = allowed ? cfg | CFG_TRANSFER_BIT : cfg & ~CFG_TRANSFER_BIT;
        }
    }

    /// @dev Sets a budget; a new asset starts being tracked. The amount already spent in the current
    ///      window is carried over when the period changes (a change never refills a budget).
    function _setBudget(address token, uint256 limit, uint256 period) private {
        if (period == 0 || period > U48 || limit > U128) revert InvalidParams();
        (bool tracked,,, uint256 spent) = _budgetOf(token);
        uint256 window = block.timestamp / period;
        uint256 st = _state;
        if (token == address(0)) {
            st &= ~((U48 << ETH_PERIOD_SHIFT) | (U48 << ETH_WINDOW_SHIFT));
            _state = st | (period << ETH_PERIOD_SHIFT) | (window << ETH_WINDOW_SHIFT);
            _ethAmounts = limit | (spent << 128);
        } else {
            uint256 kept; // index and transfer bit
            if (tracked) {
                kept = _tokenConfig[token] & ~(U128 | (U48 << CFG_PERIOD_SHIFT));
            } else {
                uint256 count = (st >> COUNT_SHIFT) & 0xff;
                if (count >= MAX_TRACKED_ASSETS) revert TooManyTrackedAssets();
                _tokenAt[count] = token;
                _state = st + (1 << COUNT_SHIFT);
                kept = (count + 1) << CFG_INDEX_SHIFT;
                if (_callAllowed[_callKey(token, TRANSFER)]) kept |= CFG_TRANSFER_BIT;
            }
            _tokenConfig[token] = kept | limit | (period << CFG_PERIOD_SHIFT);
            _tokenSpent[token] = SPENT_MARKER | (window << SPENT_WINDOW_SHIFT) | spent;
        }
    }

    /// @dev Budget settings of `token` (address(0) = ETH) and what is spent in the current period.
    function _budgetOf(address token)
        private
        view
        returns (bool tracked, uint256 limit, uint256 period, uint256 spent)
    {
        if (token == address(0)) {
            uint256 st = _state;
            period = (st >> ETH_PERIOD_SHIFT) & U48;
            if (period == 0) return (false, 0, 0, 0);
            uint256 amounts = _ethAmounts;
            limit = amounts & U128;
            if ((st >> ETH_WINDOW_SHIFT) & U48 == block.timestamp / period) spent = amounts >> 128;
        } else {
            uint256 cfg = _tokenConfig[token];
            if (cfg == 0) return (false, 0, 0, 0);
            period = (cfg >> CFG_PERIOD_SHIFT) & U48;
            limit = cfg & U128;
            uint256 used = _tokenSpent[token];
            if ((used >> SPENT_WINDOW_SHIFT) & U48 == block.timestamp / period) spent = used & U128;
        }
        tracked = true;
    }

    // ─────────────────────────────────────────────────────────────── signatures and digests

    /// @dev A 65-byte (r, s, v) signature by the root over `digest`; v ∈ {27, 28}, s ≤ n/2.
    function _isRootSig(bytes32 digest, bytes calldata sig) private view returns (bool) {
        if (sig.length != 65) return false;
        bytes32 r = bytes32(sig[0:32]);
        bytes32 s = bytes32(sig[32:64]);
        uint8 v = uint8(sig[64]);
        if ((v != 27 && v != 28) || uint256(s) > HALF_N) return false;
        address signer = ecrecover(digest, v, r, s);
        return signer != address(0) && signer == _root;
    }

    function _buildDomainSeparator() private view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, NAME_HASH, VERSION_HASH, block.chainid, address(this)));
    }

    function _domainSeparator() private view returns (bytes32) {
        return block.chainid == _deployChainId ? _deployDomainSeparator : _buildDomainSeparator();
    }

    function _operationDigest(Call[] calldata calls, uint256 nonce_, uint256 deadline)
        private
        view
        returns (bytes32 digest)
    {
        uint256 n = calls.length;
        uint256 hashes;
        assembly ("memory-safe") {
            hashes := mload(0x40)
            mstore(0x40, add(hashes, shl(5, n)))
        }
        bytes32 callTypehash = CALL_TYPEHASH;
        // Raw calldata walk (the ABI layout of Call[]): for well-formed calldata it reads exactly what
        // the Solidity accessors read; malformed offsets make those accessors revert before any call
        // is made (every executed field goes through them in `_execTier1` / `_call`).
        assembly ("memory-safe") {
            let m := mload(0x40)
            for { let i := 0 } lt(i, n) { i := add(i, 1) } {
                let p := add(calls.offset, calldataload(add(calls.offset, shl(5, i))))
                let d := add(p, calldataload(add(p, 0x40)))
                let len := calldataload(d)
                calldatacopy(m, add(d, 0x20), len)
                let dataHash := keccak256(m, len)
                mstore(m, callTypehash)
                mstore(add(m, 0x20), calldataload(p))
                mstore(add(m, 0x40), calldataload(add(p, 0x20)))
                mstore(add(m, 0x60), dataHash)
                mstore(add(m, 0x80), calldataload(add(p, 0x60)))
                mstore(add(hashes, shl(5, i)), keccak256(m, 0xa0))
            }
        }
        bytes32 sep = _domainSeparator();
        bytes32 opTypehash = OPERATION_TYPEHASH;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, opTypehash)
            mstore(add(m, 0x20), keccak256(hashes, shl(5, n)))
            mstore(add(m, 0x40), nonce_)
            mstore(add(m, 0x60), deadline)
            let structHash := keccak256(m, 0x80)
            mstore(m, shl(240, 0x1901))
            mstore(add(m, 0x02), sep)
            mstore(add(m, 0x22), structHash)
            digest := keccak256(m, 0x42)
        }
    }

    function _adminDigest(AdminOp calldata op) private view returns (bytes32) {
        bytes32 structHash =
            keccak256(abi.encode(ADMIN_TYPEHASH, op.action, keccak256(op.params), op.nonce, op.deadline));
        return keccak256(abi.encodePacked("\x19\x01", _domainSeparator(), structHash));
    }

    // ─────────────────────────────────────────────────────────────── views

    /// @notice The nonce the next `exec` must carry.
    function nonce() external view returns (uint256) {
        return _state & U64;
    }

    /// @notice The nonce the next `admin` must carry.
    function adminNonce() external view returns (uint256) {
        return (_state >> ADMIN_NONCE_SHIFT) & U32;
    }

    function paused() external view returns (bool) {
        return (_state >> PAUSED_SHIFT) & 0xff != 0;
    }

    function root() external view returns (address) {
        return _root;
    }

    /// @notice The FROST group public key: x-coordinate and y parity (0 even, 1 odd).
    function groupKey() external view returns (uint256 x, uint8 parity) {
        return (_groupKeyX, uint8(_state >> PARITY_SHIFT));
    }

    function timelockDelay() external view returns (uint64) {
        return uint64((_state >> DELAY_SHIFT) & U32);
    }

    /// @notice The eta of a queued change, 0 if none.
    function queuedChange(bytes32 id) external view returns (uint256 eta) {
        return _queued[id];
    }

    function isCallAllowed(address target, bytes4 selector) external view returns (bool) {
        return _callAllowed[_callKey(target, selector)];
    }

    function isSpenderAllowed(address spender) external view returns (bool) {
        return _spenderAllowed[spender];
    }

    /// @notice The assets whose outflow tier 1 measures: ETH (address(0)) first if tracked, then
    ///         the ERC-20s in tracking order.
    function trackedAssets() external view returns (address[] memory assets) {
        uint256 st = _state;
        uint256 count = (st >> COUNT_SHIFT) & 0xff;
        uint256 eth = (st >> ETH_PERIOD_SHIFT) & U48 != 0 ? 1 : 0;
        assets = new address[](count + eth);
        for (uint256 j; j < count; ++j) {
            assets[j + eth] = _tokenAt[j];
        }
    }

    /// @notice The budget of `token` (address(0) = ETH) and its use in the current period (all zero
    ///         if untracked).
    function budget(address token)
        external
        view
        returns (uint256 limit, uint64 period, uint256 spent, uint256 remaining)
    {
        (, uint256 l, uint256 p, uint256 sp) = _budgetOf(token);
        return (l, uint64(p), sp, sp < l ? l - sp : 0);
    }

    function domainSeparator() external view returns (bytes32) {
        return _domainSeparator();
    }

    /// @notice The EIP-712 digest of Operation(calls, nonce, deadline) the signers sign.
    function operationDigest(Call[] calldata calls, uint256 nonce, uint256 deadline) external view returns (bytes32) {
        return _operationDigest(calls, nonce, deadline);
    }

    /// @notice The EIP-712 digest of an AdminOp.
    function adminDigest(AdminOp calldata op) external view returns (bytes32) {
        return _adminDigest(op);
    }
}
