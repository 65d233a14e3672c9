// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {FrostVerifier} from "./FrostVerifier.sol";

/// @notice The part of the Safe (v1.4.1 / v1.5.0) interface the module uses.
interface ISafeModuleTarget {
    /// @dev `operation`: 0 CALL, 1 DELEGATECALL (Safe's Enum.Operation).
    function execTransactionFromModuleReturnData(address to, uint256 value, bytes calldata data, uint8 operation)
        external
        returns (bool success, bytes memory returnData);
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
///        current period (fixed windows `block.timestamp / period`).
///      - Tier 2 (FROST + root ECDSA signature over the same digest): no restrictions, no budget
///        charge (the root signer's own guard is the limit).
///      Admin: root alone may change any setting; changes that widen power are queued behind a
///      timelock that the root, the FROST quorum or the Safe can cancel; changes that narrow power
///      apply at once. The FROST quorum alone may pause and cancel. The Safe may change anything at
///      once through `configure` (its owners can remove the module anyway).
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
    /// @dev Keyed by `_callKey(target, selector)`.
    mapping(bytes32 key => bool) private _callAllowed;
    mapping(address spender => bool) private _spenderAllowed;
    /// @dev Tracked ERC-20 number i: token (bits 0..159) | period (160..207) | window (208..255).
    mapping(uint256 index => uint256) private _tokenAt;
    /// @dev 1 + index in `_tokenAt` of a tracked ERC-20, 0 if untracked.
    mapping(address token => uint256) private _tokenIndex;
    /// @dev Budget amounts of an asset (address(0) = ETH): limit (bits 0..127) | spent in the stored
    ///      window (128..255). The limit keeps the slot non-zero, so a charge is never a zero→non-zero write.
    mapping(address token => uint256) private _amounts;

    uint256 private constant ADMIN_NONCE_SHIFT = 64;
    uint256 private constant DELAY_SHIFT = 96;
    uint256 private constant PARITY_SHIFT = 128;
    uint256 private constant PAUSED_SHIFT = 136;
    uint256 private constant COUNT_SHIFT = 144;
    uint256 private constant ETH_PERIOD_SHIFT = 152;
    uint256 private constant ETH_WINDOW_SHIFT = 200;
    uint256 private constant TOKEN_PERIOD_SHIFT = 160;
    uint256 private constant TOKEN_WINDOW_SHIFT = 208;
    uint256 private constant U32 = 0xffffffff;
    uint256 private constant U48 = 0xffffffffffff;
    uint256 private constant U64 = 0xffffffffffffffff;
    uint256 private constant U128 = 0xffffffffffffffffffffffffffffffff;
    /// @dev Transient slot of the reentrancy lock.
    uint256 private constant LOCK_SLOT = uint256(keccak256("treasury.module.lock")) - 1;

    /// @notice The Safe this module executes from.
    address public immutable safe;
    uint256 private immutable _deployChainId;
    bytes32 private immutable _deployDomainSeparator;

    constructor(address safe_, uint256 groupKeyX, uint8 groupKeyParity, address root_, uint64 timelockDelay_) {
        if (safe_ == address(0) || timelockDelay_ > U32) revert InvalidParams();
        if (!FrostVerifier.isValidKey(groupKeyX, groupKeyParity)) revert InvalidGroupKey();
        safe = safe_;
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
            for (uint256 i; i < calls.length; ++i) {
                _call(i, calls[i]);
            }
        } else {
            _execTier1(calls, st);
        }
        _unlock();
        emit Executed(nonce, digest, tier, calls.length);
    }

    /// @dev Tier 1: balances of the tracked assets before, each call checked then made (a refused call
    ///      reverts the whole batch, so checking just before each call is equivalent to checking all
    ///      first), balances after, outflows charged.
    function _execTier1(Call[] calldata calls, uint256 st) private {
        uint256 n = calls.length;
        address s = safe;
        bool ethTracked = (st >> ETH_PERIOD_SHIFT) & U48 != 0;
        uint256 ethBefore = ethTracked ? s.balance : 0;
        uint256 count = (st >> COUNT_SHIFT) & 0xff;
        uint256[] memory before = new uint256[](count);
        for (uint256 j; j < count; ++j) {
            before[j] = _balance(address(uint160(_tokenAt[j])));
        }
        for (uint256 i; i < n; ++i) {
            Call calldata c = calls[i];
            _checkTier1(i, c);
            _call(i, c);
        }
        if (ethTracked) {
            uint256 ethAfter = s.balance;
            if (ethAfter < ethBefore) _chargeEth(ethBefore - ethAfter);
        }
        for (uint256 j; j < count; ++j) {
            uint256 entry = _tokenAt[j]; // re-read (warm): settings may have changed during the batch
            uint256 afterBal = _balance(address(uint160(entry)));
            uint256 b = before[j];
            if (afterBal < b) _chargeToken(j, entry, b - afterBal);
        }
    }

    /// @dev The tier-1 rules for one call. Fields are read from calldata in assembly; the call itself
    ///      goes through the validating Solidity accessors in `_call`, so malformed calldata reverts
    ///      before anything executes.
    function _checkTier1(uint256 i, Call calldata c) private view {
        uint256 op;
        address to;
        uint256 len;
        bytes4 sel;
        address spender;
        bool eoa;
        assembly ("memory-safe") {
            to := and(calldataload(c), 0xffffffffffffffffffffffffffffffffffffffff)
            op := calldataload(add(c, 0x60))
            let d := add(c, calldataload(add(c, 0x40)))
            len := calldataload(d)
            let w := calldataload(add(d, 0x20))
            // bytes4(data): the first min(len, 4) bytes, zero-padded
            let keep := 4
            if lt(len, 4) { keep := len }
            sel := and(w, not(shr(shl(3, keep), not(0))))
            spender := and(calldataload(add(d, 0x24)), 0xffffffffffffffffffffffffffffffffffffffff)
            eoa := and(iszero(len), iszero(extcodesize(to)))
        }
        if (op != 0) revert DelegateCallNotAllowed(i);
        if (eoa) return; // empty calldata to an address without code: ETH to an EOA
        if (sel == APPROVE || sel == INCREASE_ALLOWANCE) {
            if (len < 36) revert CallNotAllowed(i, to, sel);
            if (!_spenderAllowed[spender]) revert SpenderNotAllowed(i, spender);
        } else if (!_callAllowed[_callKey(to, sel)]) {
            revert CallNotAllowed(i, to, sel);
        }
    }

    /// @dev Key of an allow-listed (target, selector) pair: target ‖ selector, no hashing needed.
    function _callKey(address target, bytes4 selector) private pure returns (bytes32) {
        return bytes32(uint256(uint160(target)) << 96 | uint256(uint32(selector)));
    }

    /// @dev Makes the Safe call `c` (assembly: this is the hot path of every payment).
    function _call(uint256 i, Call calldata c) private {
        address to = c.to;
        uint256 value = c.value;
        uint8 op = c.operation;
        bytes calldata data = c.data;
        address s = safe;
        bytes4 selector = ISafeModuleTarget.execTransactionFromModuleReturnData.selector;
        bool ok;
        assembly ("memory-safe") {
            let m := mload(0x40)
            mstore(m, selector)
            mstore(add(m, 0x04), to)
            mstore(add(m, 0x24), value)
            mstore(add(m, 0x44), 0x80)
            mstore(add(m, 0x64), op)
            mstore(add(m, 0x84), data.length)
            calldatacopy(add(m, 0xa4), data.offset, data.length)
            mstore(add(add(m, 0xa4), data.length), 0) // zero padding
            let size := add(0xa4, and(add(data.length, 31), not(31)))
            if iszero(call(gas(), s, 0, m, size, 0x00, 0x20)) {
                returndatacopy(m, 0, returndatasize())
                revert(m, returndatasize())
            }
            ok := and(gt(returndatasize(), 0x3f), eq(mload(0x00), 1))
        }
        if (!ok) {
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
        uint256 amounts = _amounts[address(0)];
        uint256 storedWindow = (st >> ETH_WINDOW_SHIFT) & U48;
        uint256 spent = storedWindow == window ? amounts >> 128 : 0;
        _checkBudget(address(0), amounts & U128, spent, outflow);
        if (storedWindow != window) _state = (st & ~(U48 << ETH_WINDOW_SHIFT)) | (window << ETH_WINDOW_SHIFT);
        _amounts[address(0)] = (amounts & U128) | ((spent + outflow) << 128);
    }

    /// @dev Charges an outflow of tracked ERC-20 number `j` (settings `entry`) to its current period.
    function _chargeToken(uint256 j, uint256 entry, uint256 outflow) private {
        address token = address(uint160(entry));
        uint256 window = block.timestamp / ((entry >> TOKEN_PERIOD_SHIFT) & U48);
        uint256 amounts = _amounts[token];
        uint256 storedWindow = entry >> TOKEN_WINDOW_SHIFT;
        uint256 spent = storedWindow == window ? amounts >> 128 : 0;
        _checkBudget(token, amounts & U128, spent, outflow);
        if (storedWindow != window) _tokenAt[j] = (entry & ~(U48 << TOKEN_WINDOW_SHIFT)) | (window << TOKEN_WINDOW_SHIFT);
        _amounts[token] = (amounts & U128) | ((spent + outflow) << 128);
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
            _callAllowed[_callKey(target, selector)] = allowed;
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
        } else {
            uint256 idx = _tokenIndex[token];
            if (!tracked) {
                uint256 count = (st >> COUNT_SHIFT) & 0xff;
                if (count >= MAX_TRACKED_ASSETS) revert TooManyTrackedAssets();
                idx = count + 1;
                _tokenIndex[token] = idx;
                _state = st + (1 << COUNT_SHIFT);
            }
            _tokenAt[idx - 1] = uint256(uint160(token)) | (period << TOKEN_PERIOD_SHIFT) | (window << TOKEN_WINDOW_SHIFT);
        }
        _amounts[token] = limit | (spent << 128);
    }

    /// @dev Budget settings of `token` (address(0) = ETH) and what is spent in the current period.
    function _budgetOf(address token)
        private
        view
        returns (bool tracked, uint256 limit, uint256 period, uint256 spent)
    {
        uint256 storedWindow;
        if (token == address(0)) {
            uint256 st = _state;
            period = (st >> ETH_PERIOD_SHIFT) & U48;
            storedWindow = (st >> ETH_WINDOW_SHIFT) & U48;
        } else {
            uint256 idx = _tokenIndex[token];
            if (idx == 0) return (false, 0, 0, 0);
            uint256 entry = _tokenAt[idx - 1];
            period = (entry >> TOKEN_PERIOD_SHIFT) & U48;
            storedWindow = entry >> TOKEN_WINDOW_SHIFT;
        }
        if (period == 0) return (false, 0, 0, 0);
        tracked = true;
        uint256 amounts = _amounts[token];
        limit = amounts & U128;
        if (storedWindow == block.timestamp / period) spent = amounts >> 128;
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
            assets[j + eth] = address(uint160(_tokenAt[j]));
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
