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
/// @dev THE PROPERTY (tier 1): with tier-1 signatures alone, in any budget window of an asset (one
///      period long, see below), the Safe's gross outflow of each tracked asset is at most its
///      budget, and its balance of every other asset (ETH included when ETH has no budget) does not
///      decrease. Tracked asset = an asset with a budget (ETH = address(0)). Proven by
///      chain/test/Attacks.t.sol and the invariant suite chain/test/Invariant.t.sol.
///
///      Tier-1 rules, per call (any refusal reverts the whole batch; DELEGATECALL never; never a
///      call to the Safe itself or to this module):
///      - Value: any call may carry ETH only if ETH is tracked; the sum of all values is charged.
///      - Empty calldata: to an address without code (ETH to an EOA), or to a contract allow-listed
///        with selector 0x00000000 (selector 0 means exactly empty calldata; 1–3 bytes of calldata,
///        or 4+ bytes starting with four zero bytes, are always refused).
///      - A tracked ERC-20 T: `transfer` if (T, transfer) is allow-listed; `approve(x, a)` if x is
///        an allow-listed spender or a == 0; `increaseAllowance(x, a)` if x is allow-listed;
///        `decreaseAllowance` always. The call must succeed and return nothing or `true`. T is
///        measured around the call. Any other selector on T: as a generic entry (below).
///      - Any other target: approvals and transfers of any token standard (ERC-20/721/1155/777
///        `approve`, `increaseAllowance`, `transfer`, `transferFrom`, `setApprovalForAll`,
///        `safeTransferFrom`, `safeBatchTransferFrom`, `send`, `authorizeOperator`) are refused,
///        allow-listed or not: an untracked asset cannot be moved nor exposed.
///      - Uniswap V2 router swaps (the nine `swap*` selectors), on an allow-listed (router, selector):
///        the recipient must be the Safe; the path must start with a tracked token (or the router's
///        WETH for the ETH-in variants, paying tracked ETH) and end in a different tracked token (or
///        WETH for the ETH-out variants, with ETH tracked). Every tracked asset is measured.
///      - Any other allow-listed (target, selector): every tracked asset is measured around the call,
///        and so is the target itself when untracked and answering `balanceOf(safe)`: a decrease of
///        it reverts (an untracked asset's own functions, such as WETH `withdraw`, cannot spend it).
///        A generic entry is vetted by whoever allow-lists it (root behind the timelock, or the Safe):
///        it must not be a contract that holds Safe allowances on untracked assets.
///      Gross charging: each tracked ERC-20 is charged the sum, over the calls that measure it, of
///      its decreases (balance before minus after that call, increases ignored), so inflow in a
///      batch never hides outflow. Every charge is checked against the remaining budget.
///      Budget windows: a window opens at the first charge after the previous one ended and lasts
///      the period in force when it opened (its end saturates at 2^48 − 1, never wraps into the
///      past); a budget or period change never ends the current
///      window early nor resets what it spent (the new period applies from the next window).
///      Tier 2 (FROST + root ECDSA signature over the same tier-2 digest): no restrictions, no budget
///      charge (the root signer's own guard is the limit). The tier is part of the signed digest, so
///      stripping the root signature makes the FROST signature invalid.
///
///      Admin: root alone may change any setting; changes that widen tier-1 power (allowing a call or
///      a spender, raising a limit, shortening a period, tracking a new asset, rotating the root or
///      the group key, lowering the timelock) are queued behind the timelock; the root or the Safe
///      can cancel any queued change, the quorum any but a group-key rotation (its own replacement).
///      A queued change records the version of the setting it changes: any later change of that
///      setting voids it, and so does any later change of the root (a replaced root's queue dies
///      with it). Narrowing changes (lowering a limit, removing an entry, untracking) apply
///      at once. The quorum alone may pause and cancel, under its own admin nonce (the root's nonce
///      cannot be consumed by the quorum). The Safe may change anything at once through
///      `configure` (its owners can remove the module anyway).
///
///      Execution: tier 1 makes one Safe entry per call (`execTransactionFromModuleReturnData`, to
///      measure and check each call); tier 2 runs a batch of two or more plain calls as one
///      DELEGATECALL of the Safe's own MultiSendCallOnly (an immutable set at deployment).
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

    /// @notice At most this many tracked ERC-20s, besides ETH (bounds the gas of a measured call).
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
    /// @notice A swap whose recipient is not the Safe, or whose path does not start and end in
    ///         tracked assets.
    error SwapNotAllowed(uint256 index);
    /// @notice A call carries ETH while ETH has no budget.
    error EthNotTracked(uint256 index);
    /// @notice A tracked token's `transfer`/`approve`/... returned something other than nothing or `true`.
    error TokenCallRefused(uint256 index, address token);
    error BudgetExceeded(address token, uint256 outflow, uint256 remaining);
    error CallFailed(uint256 index, bytes reason);
    error BalanceQueryFailed(address token);
    error Unauthorized();
    error UnknownAction(uint8 action);
    error NotSafe();
    error InvalidGroupKey();
    error InvalidParams();
    error TooManyTrackedAssets();
    /// @notice Tracking needs a contract whose `balanceOf(safe)` answers.
    error NotAnAsset(address token);
    error ChangeNotQueued(bytes32 id);
    error ChangeNotReady(bytes32 id, uint256 eta);
    /// @notice The setting a queued change would set has changed since it was queued.
    error ChangeStale(bytes32 id);
    error Reentrancy();
    /// @notice A generic call made the Safe's balance of its untracked target (an asset) decrease.
    error UntrackedAssetDecreased(uint256 index, address target);

    event Executed(uint256 indexed nonce, bytes32 indexed digest, uint8 tier, uint256 calls);
    event ChangeQueued(bytes32 indexed id, uint8 action, bytes params, uint256 eta);
    /// @param id the change id `keccak256(abi.encode(action, params, nonce))` (root or quorum admin
    ///        nonce; 0 for `configure`).
    /// @param by the root address (root-signed), this module's address (quorum-signed), the Safe
    ///        (`configure`) or the caller of `applyChange`.
    event ChangeApplied(bytes32 indexed id, uint8 indexed action, bytes params, address by);
    event ChangeCancelled(bytes32 indexed id, address by);
    /// @param by as in `ChangeApplied`.
    event Paused(address by);
    event Unpaused(address by);
    event RootChanged(address indexed previous, address indexed root);
    event GroupKeyChanged(uint256 x, uint8 parity);

    // ─────────────────────────────────────────────────────────────── EIP-712

    bytes32 private constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 private constant NAME_HASH = keccak256("TreasuryModule");
    bytes32 private constant VERSION_HASH = keccak256("1");
    bytes32 private constant CALL_TYPEHASH = keccak256("Call(address to,uint256 value,bytes data,uint8 operation)");
    bytes32 private constant OPERATION_TYPEHASH = keccak256(
        "Operation(Call[] calls,uint256 nonce,uint256 deadline,uint8 tier)Call(address to,uint256 value,bytes data,uint8 operation)"
    );
    bytes32 private constant ADMIN_TYPEHASH =
        keccak256("AdminOp(uint8 action,bytes params,uint256 nonce,uint256 deadline)");

    uint256 private constant HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;
    bytes4 private constant TRANSFER = 0xa9059cbb;
    bytes4 private constant APPROVE = 0x095ea7b3;
    bytes4 private constant INCREASE_ALLOWANCE = 0x39509351;
    bytes4 private constant DECREASE_ALLOWANCE = 0xa457c2d7;

    // ─────────────────────────────────────────────────────────────── storage

    /// @dev Packed hot state, one slot:
    ///      bits 0..63 nonce | 64..95 root admin nonce | 96..127 timelockDelay | 128..135 group key
    ///      parity | 136..143 paused | 144..151 number of tracked ERC-20s | 152..199 ETH budget period
    ///      (0 = ETH untracked) | 200..247 end of the ETH budget window (timestamp, exclusive).
    uint256 private _state;
    uint256 private _groupKeyX;
    address private _root;
    /// @dev The quorum's admin nonce (PAUSE and CANCEL), separate from the root's.
    uint256 private _quorumAdminNonce;
    /// @dev Queued change: eta (bits 0..63) | version of its setting when queued (64..191) | action
    ///      (192..199) | root epoch when queued (200..247, `_rootEpoch`). 0 = not queued.
    mapping(bytes32 id => uint256) private _queued;
    /// @dev Version of each setting (`_settingKey`), bumped by every applied change of it.
    mapping(bytes32 setting => uint256) private _version;
    /// @dev Keyed by `_callKey(target, selector)`. The source of truth of the call allow-list; for a
    ///      tracked ERC-20 the (token, transfer) entry is mirrored in its `_tokenConfig` bit.
    mapping(bytes32 key => bool) private _callAllowed;
    mapping(address spender => bool) private _spenderAllowed;
    /// @dev Tracked ERC-20 number i (untracking moves the last one into the freed index).
    mapping(uint256 index => address) private _tokenAt;
    /// @dev Settings of a tracked ERC-20: limit (bits 0..127) | period (128..175) | 1 + its index in
    ///      `_tokenAt` (176..183; 0 = untracked, the whole slot is then 0) | (token, transfer)
    ///      allow-listed (bit 184, a copy of `_callAllowed` kept in sync).
    mapping(address token => uint256) private _tokenConfig;
    /// @dev Use of an ERC-20's budget: spent (bits 0..127) in the window ending at (128..175) | bit
    ///      255 always set. Kept when the token is untracked (re-tracking never refills a window).
    mapping(address token => uint256) private _tokenSpent;
    /// @dev ETH budget amounts: limit (bits 0..127) | spent in the window of `_state` (128..255).
    uint256 private _ethAmounts;

    uint256 private constant ADMIN_NONCE_SHIFT = 64;
    uint256 private constant DELAY_SHIFT = 96;
    uint256 private constant PARITY_SHIFT = 128;
    uint256 private constant PAUSED_SHIFT = 136;
    uint256 private constant COUNT_SHIFT = 144;
    uint256 private constant ETH_PERIOD_SHIFT = 152;
    uint256 private constant ETH_END_SHIFT = 200;
    uint256 private constant CFG_PERIOD_SHIFT = 128;
    uint256 private constant CFG_INDEX_SHIFT = 176;
    uint256 private constant CFG_TRANSFER_BIT = 1 << 184;
    uint256 private constant SPENT_END_SHIFT = 128;
    uint256 private constant SPENT_MARKER = 1 << 255;
    uint256 private constant Q_VERSION_SHIFT = 64;
    uint256 private constant Q_ACTION_SHIFT = 192;
    uint256 private constant Q_ROOT_EPOCH_SHIFT = 200;
    uint256 private constant U32 = 0xffffffff;
    uint256 private constant U48 = 0xffffffffffff;
    uint256 private constant U64 = 0xffffffffffffffff;
    uint256 private constant U128 = 0xffffffffffffffffffffffffffffffff;
    /// @dev Transient slot of the reentrancy lock.
    uint256 private constant LOCK_SLOT = uint256(keccak256("treasury.module.lock")) - 1;

    /// @notice The Safe this module executes from.
    address public immutable safe;
    /// @notice Safe's `MultiSendCallOnly` library (address(0): disabled). Tier-2 batches of two or
    ///         more plain calls enter the Safe once, as one DELEGATECALL of `multiSend` made by this
    ///         module (see `_executeBatch`); set at deployment only, never chosen by a caller.
    address public immutable multiSendCallOnly;
    uint256 private immutable _deployChainId;
    bytes32 private immutable _deployDomainSeparator;

    /// @param multiSendCallOnly_ the Safe deployment's MultiSendCallOnly (1.4.1 / 1.5.0), or
    ///        address(0) to make every call its own Safe entry.
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
    /// @param sig FROST signature over `operationDigest(calls, nonce, deadline, tier)`.
    /// @param rootSig empty (tier 1) or the root's 65-byte (r, s, v) ECDSA signature over the same
    ///        tier-2 digest, v ∈ {27, 28}, low s (tier 2).
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
        uint8 tier = rootSig.length != 0 ? 2 : 1;
        bytes32 digest = _operationDigest(calls, nonce, deadline, tier);
        if (!FrostVerifier.verify(_groupKeyX, uint8(st >> PARITY_SHIFT), digest, sig.rX, sig.rY, sig.z)) {
            revert InvalidFrostSignature();
        }
        if (tier == 2 && !_isRootSig(digest, rootSig)) revert InvalidRootSignature();
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

    /// @dev What a tier-1 call may make the Safe lose, hence what is measured around it.
    uint256 private constant MEASURE_NOTHING = 0;
    uint256 private constant MEASURE_ALL = 1;
    /// @dev `MEASURE_TOKEN + j`: tracked ERC-20 number j only (the call's target; its return checked).
    uint256 private constant MEASURE_TOKEN = 2;

    /// @dev Tier 1: each call checked (rules of `_checkTier1`), executed alone, measured, in order;
    ///      decreases summed per tracked asset (gross), then charged. ETH leaves the Safe only as the
    ///      value of its own calls (no call targets the Safe, none is a DELEGATECALL), so the ETH
    ///      outflow is exactly the sum of the values.
    function _execTier1(Call[] calldata calls, uint256 st) private {
        uint256 n = calls.length;
        uint256 count = (st >> COUNT_SHIFT) & 0xff;
        uint256[] memory out = new uint256[](count);
        uint256[] memory before = new uint256[](count);
        bool ethTracked = (st >> ETH_PERIOD_SHIFT) & U48 != 0;
        uint256 ethOut;
        for (uint256 i; i < n; ++i) {
            Call calldata c = calls[i];
            uint256 value = c.value;
            if (value != 0) {
                if (!ethTracked) revert EthNotTracked(i);
                ethOut += value;
            }
            uint256 cls = _checkTier1(c, i);
            if (cls == MEASURE_ALL) {
                for (uint256 j; j < count; ++j) {
                    before[j] = _balance(_tokenAt[j]);
                }
                (bool own, uint256 ownBefore) = _untrackedTargetBalance(c.to);
                _callChecked(c, i, false);
                for (uint256 j; j < count; ++j) {
                    uint256 b = _balance(_tokenAt[j]);
                    if (b < before[j]) out[j] += before[j] - b;
                }
                if (own) _checkTargetKept(c.to, ownBefore, i);
            } else if (cls == MEASURE_NOTHING) {
                _callChecked(c, i, false);
            } else {
                uint256 j = cls - MEASURE_TOKEN;
                address t = c.to;
                uint256 b0 = _balance(t);
                _callChecked(c, i, true);
                uint256 b1 = _balance(t);
                if (b1 < b0) out[j] += b0 - b1;
            }
        }
        if (ethOut != 0) _chargeEth(ethOut);
        for (uint256 j; j < count; ++j) {
            if (out[j] != 0) _chargeToken(_tokenAt[j], out[j]);
        }
    }

    /// @dev The tier-1 rules for one call (reverts if refused) and what to measure around it.
    function _checkTier1(Call calldata c, uint256 i) private view returns (uint256 cls) {
        address to = c.to;
        if (c.operation != 0) revert DelegateCallNotAllowed(i);
        bytes calldata data = c.data;
        uint256 len = data.length;
        if (to == safe || to == address(this)) revert CallNotAllowed(i, to, len >= 4 ? bytes4(data) : bytes4(0));
        if (len == 0) {
            if (to.code.length == 0) return MEASURE_NOTHING; // ETH to an EOA (value checked by the caller)
            if (!_callAllowed[_callKey(to, bytes4(0))]) revert CallNotAllowed(i, to, bytes4(0));
            return MEASURE_ALL;
        }
        if (len < 4) revert CallNotAllowed(i, to, bytes4(0));
        bytes4 sel = bytes4(data);
        if (sel == bytes4(0)) revert CallNotAllowed(i, to, sel);
        uint256 cfg = _tokenConfig[to];
        if (cfg != 0) {
            uint256 tokenCls = MEASURE_TOKEN - 1 + ((cfg >> CFG_INDEX_SHIFT) & 0xff);
            if (sel == TRANSFER) {
                if (cfg & CFG_TRANSFER_BIT == 0) revert CallNotAllowed(i, to, sel);
                return tokenCls;
            }
            if (sel == APPROVE || sel == INCREASE_ALLOWANCE) {
                if (len < 68) revert CallNotAllowed(i, to, sel);
                (address spender, uint256 amount) = abi.decode(data[4:68], (address, uint256));
                if (!_spenderAllowed[spender] && !(sel == APPROVE && amount == 0)) {
                    revert SpenderNotAllowed(i, spender);
                }
                return tokenCls;
            }
            if (sel == DECREASE_ALLOWANCE) return tokenCls;
        } else if (_movesAssets(sel)) {
            revert CallNotAllowed(i, to, sel);
        }
        if (!_callAllowed[_callKey(to, sel)]) revert CallNotAllowed(i, to, sel);
        if (_isSwap(sel)) _checkSwap(data, sel, c.value, i);
        return MEASURE_ALL;
    }

    /// @dev Selectors that move or expose a token of any standard (refused on untracked targets).
    function _movesAssets(bytes4 sel) private pure returns (bool) {
        return sel == TRANSFER || sel == APPROVE || sel == INCREASE_ALLOWANCE || sel == 0x23b872dd // transferFrom
            || sel == 0xa22cb465 // setApprovalForAll
            || sel == 0x42842e0e || sel == 0xb88d4fde // ERC-721 safeTransferFrom
            || sel == 0xf242432a || sel == 0x2eb2c2d6 // ERC-1155 safeTransferFrom, safeBatchTransferFrom
            || sel == 0x9bd9bbc6 || sel == 0x959b8c3f; // ERC-777 send, authorizeOperator
    }

    // Uniswap V2 router swaps: (a, b, path, to, deadline) and, for the ETH-in ones, (a, path, to, deadline).
    bytes4 private constant SWAP_EXACT_TOKENS_FOR_TOKENS = 0x38ed1739;
    bytes4 private constant SWAP_TOKENS_FOR_EXACT_TOKENS = 0x8803dbee;
    bytes4 private constant SWAP_EXACT_TOKENS_FOR_TOKENS_FOT = 0x5c11d795;
    bytes4 private constant SWAP_TOKENS_FOR_EXACT_ETH = 0x4a25d94a;
    bytes4 private constant SWAP_EXACT_TOKENS_FOR_ETH = 0x18cbafe5;
    bytes4 private constant SWAP_EXACT_TOKENS_FOR_ETH_FOT = 0x791ac947;
    bytes4 private constant SWAP_EXACT_ETH_FOR_TOKENS = 0x7ff36ab5;
    bytes4 private constant SWAP_ETH_FOR_EXACT_TOKENS = 0xfb3bdb41;
    bytes4 private constant SWAP_EXACT_ETH_FOR_TOKENS_FOT = 0xb6f9de95;

    function _isSwap(bytes4 sel) private pure returns (bool) {
        return _isTokenInSwap(sel) || _isEthInSwap(sel);
    }

    function _isTokenInSwap(bytes4 sel) private pure returns (bool) {
        return sel == SWAP_EXACT_TOKENS_FOR_TOKENS || sel == SWAP_TOKENS_FOR_EXACT_TOKENS
            || sel == SWAP_EXACT_TOKENS_FOR_TOKENS_FOT || _isEthOutSwap(sel);
    }

    function _isEthOutSwap(bytes4 sel) private pure returns (bool) {
        return sel == SWAP_TOKENS_FOR_EXACT_ETH || sel == SWAP_EXACT_TOKENS_FOR_ETH
            || sel == SWAP_EXACT_TOKENS_FOR_ETH_FOT;
    }

    function _isEthInSwap(bytes4 sel) private pure returns (bool) {
        return sel == SWAP_EXACT_ETH_FOR_TOKENS || sel == SWAP_ETH_FOR_EXACT_TOKENS || sel == SWAP_EXACT_ETH_FOR_TOKENS_FOT;
    }

    /// @dev Parameter conditions of a Uniswap V2 swap: recipient the Safe; path from a tracked asset
    ///      to a different tracked asset (WETH standing for ETH on the ETH side, ETH tracked).
    function _checkSwap(bytes calldata data, bytes4 sel, uint256 value, uint256 i) private view {
        address[] memory path;
        address to;
        bool ethIn = _isEthInSwap(sel);
        if (ethIn) {
            (, path, to,) = abi.decode(data[4:], (uint256, address[], address, uint256));
        } else {
            (,, path, to,) = abi.decode(data[4:], (uint256, uint256, address[], address, uint256));
            if (value != 0) revert SwapNotAllowed(i);
        }
        uint256 m = path.length;
        if (to != safe || m < 2 || path[0] == path[m - 1]) revert SwapNotAllowed(i);
        bool ethTracked = (_state >> ETH_PERIOD_SHIFT) & U48 != 0;
        // ETH in: the router wraps the call's value (charged as ETH; the caller checked ETH is tracked)
        if (!ethIn && _tokenConfig[path[0]] == 0) revert SwapNotAllowed(i);
        if (_isEthOutSwap(sel) ? !ethTracked : _tokenConfig[path[m - 1]] == 0) revert SwapNotAllowed(i);
    }

    /// @dev Makes the Safe execute one checked call; reverts with `CallFailed(i, reason)` if it fails,
    ///      and, for a tracked token's own functions (`tokenCall`), with `TokenCallRefused` unless it
    ///      returned nothing or `true` (ERC-20 `false` means the call did nothing).
    function _callChecked(Call calldata c, uint256 i, bool tokenCall) private {
        (bool ok, bytes memory ret) =
            ISafeModuleTarget(safe).execTransactionFromModuleReturnData(c.to, c.value, c.data, 0);
        if (!ok) revert CallFailed(i, ret);
        if (tokenCall && ret.length != 0 && (ret.length < 32 || abi.decode(ret, (uint256)) != 1)) {
            revert TokenCallRefused(i, c.to);
        }
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

    /// @dev The Safe's balance of an untracked generic-call target that answers `balanceOf` (an
    ///      untracked asset's own contract: WETH's `withdraw`, a vault's `redeem`...); `own` false if
    ///      the target is tracked (measured with the others) or does not answer.
    function _untrackedTargetBalance(address target) private view returns (bool own, uint256 b) {
        if (_tokenConfig[target] != 0) return (false, 0);
        address s = safe;
        assembly ("memory-safe") {
            mstore(0x00, shl(224, 0x70a08231)) // balanceOf(address)
            mstore(0x04, s)
            // bounded gas: a target whose fallback writes would burn all it gets in a static call
            own := and(staticcall(TARGET_BALANCE_GAS, target, 0x00, 0x24, 0x00, 0x20), gt(returndatasize(), 0x1f))
            if own { b := mload(0x00) }
        }
    }

    /// @dev Gas for `balanceOf` on an untracked generic-call target (a proxied ERC-20 needs ~10k).
    uint256 private constant TARGET_BALANCE_GAS = 50_000;

    /// @dev Reverts if the Safe's balance of the untracked target fell (or stopped answering) across
    ///      call `i`: a generic entry must not make an untracked asset decrease.
    function _checkTargetKept(address target, uint256 before, uint256 i) private view {
        (bool own, uint256 b) = _untrackedTargetBalance(target);
        if (!own || b < before) revert UntrackedAssetDecreased(i, target);
    }

    /// @dev Charges an ETH outflow to the ETH budget's current window (opening one if the last ended).
    function _chargeEth(uint256 outflow) private {
        uint256 st = _state;
        uint256 end = (st >> ETH_END_SHIFT) & U48;
        uint256 amounts = _ethAmounts;
        uint256 spent = amounts >> 128;
        if (block.timestamp >= end) {
            spent = 0;
            end = _windowEnd((st >> ETH_PERIOD_SHIFT) & U48);
            _state = (st & ~(U48 << ETH_END_SHIFT)) | (end << ETH_END_SHIFT);
        }
        _checkBudget(address(0), amounts & U128, spent, outflow);
        _ethAmounts = (amounts & U128) | ((spent + outflow) << 128);
    }

    /// @dev Charges an outflow of tracked ERC-20 `token` to its current window.
    function _chargeToken(address token, uint256 outflow) private {
        uint256 cfg = _tokenConfig[token];
        uint256 used = _tokenSpent[token];
        uint256 end = (used >> SPENT_END_SHIFT) & U48;
        uint256 spent = used & U128;
        if (block.timestamp >= end) {
            spent = 0;
            end = _windowEnd((cfg >> CFG_PERIOD_SHIFT) & U48);
        }
        _checkBudget(token, cfg & U128, spent, outflow);
        // spent + outflow ≤ limit < 2^128
        _tokenSpent[token] = SPENT_MARKER | (end << SPENT_END_SHIFT) | (spent + outflow);
    }

    /// @dev The end of a window opening now: now + period, saturated at the largest 48-bit timestamp
    ///      (a longer period must not wrap the stored end into the past and refill the budget).
    function _windowEnd(uint256 period) private view returns (uint256 end) {
        end = block.timestamp + period;
        if (end > U48) end = U48;
    }

    function _checkBudget(address token, uint256 limit, uint256 spent, uint256 outflow) private pure {
        uint256 remaining = spent < limit ? limit - spent : 0;
        if (outflow > remaining) revert BudgetExceeded(token, outflow, remaining);
    }

    function _lock() private {
        _notLocked();
        uint256 slot = LOCK_SLOT;
        assembly ("memory-safe") {
            tstore(slot, 1)
        }
    }

    /// @dev Reverts while a batch executes: no exec, admin, applyChange or configure from inside one.
    function _notLocked() private view {
        uint256 slot = LOCK_SLOT;
        bytes4 err = Reentrancy.selector;
        assembly ("memory-safe") {
            if tload(slot) {
                mstore(0x00, err)
                revert(0x00, 0x04)
            }
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
    ///         (`rootSig` non-empty: any action, under the root's admin nonce; widening changes are
    ///         queued behind the timelock) or else by a valid FROST signature for PAUSE and CANCEL
    ///         (under the quorum's own admin nonce; not the cancel of a group-key rotation). Both
    ///         signatures are over `adminDigest(op)`.
    function admin(AdminOp calldata op, FrostSig calldata frostSig, bytes calldata rootSig) external {
        _notLocked();
        uint8 action = op.action;
        if (action > CANCEL) revert UnknownAction(action);
        if (block.timestamp > op.deadline) revert Expired(op.deadline, block.timestamp);
        bytes32 digest = _adminDigest(op);
        uint256 st = _state;
        if (rootSig.length != 0) {
            if (!_isRootSig(digest, rootSig)) revert Unauthorized();
            uint256 expected = (st >> ADMIN_NONCE_SHIFT) & U32;
            if (op.nonce != expected) revert BadNonce(expected, op.nonce);
            _state = st + (1 << ADMIN_NONCE_SHIFT);
            bytes32 id = keccak256(abi.encode(action, op.params, op.nonce));
            if (_isWidening(action, op.params)) {
                uint256 eta = block.timestamp + ((st >> DELAY_SHIFT) & U32);
                uint256 version = _version[_settingKey(action, op.params)];
                _queued[id] = eta | (version << Q_VERSION_SHIFT) | (uint256(action) << Q_ACTION_SHIFT)
                    | ((_rootEpoch() & U48) << Q_ROOT_EPOCH_SHIFT);
                emit ChangeQueued(id, action, op.params, eta);
            } else {
                _apply(action, op.params, _root, id);
            }
            return;
        }
        if (action != PAUSE && action != CANCEL) revert Unauthorized();
        if (!FrostVerifier.verify(_groupKeyX, uint8(st >> PARITY_SHIFT), digest, frostSig.rX, frostSig.rY, frostSig.z)) {
            revert Unauthorized();
        }
        uint256 qn = _quorumAdminNonce;
        if (op.nonce != qn) revert BadNonce(qn, op.nonce);
        _quorumAdminNonce = qn + 1;
        if (action == CANCEL && op.params.length >= 32) {
            bytes32 target = abi.decode(op.params, (bytes32));
            if ((_queued[target] >> Q_ACTION_SHIFT) & 0xff == SET_GROUP_KEY) revert Unauthorized();
        }
        _apply(action, op.params, address(this), keccak256(abi.encode(action, op.params, op.nonce)));
    }

    /// @notice Applies a queued change once its timelock has passed, if no change of the same setting
    ///         was applied since it was queued. Callable by anyone.
    /// @param nonce the root admin nonce of the AdminOp that queued it.
    function applyChange(uint8 action, bytes calldata params, uint256 nonce) external {
        _notLocked();
        bytes32 id = keccak256(abi.encode(action, params, nonce));
        uint256 q = _queued[id];
        if (q == 0) revert ChangeNotQueued(id);
        uint256 eta = q & U64;
        if (block.timestamp < eta) revert ChangeNotReady(id, eta);
        delete _queued[id];
        if ((q >> Q_VERSION_SHIFT) & U128 != _version[_settingKey(action, params)]) revert ChangeStale(id);
        // queued by a root that has since been replaced (compromised keys are why roots rotate)
        if (q >> Q_ROOT_EPOCH_SHIFT != _rootEpoch() & U48) revert ChangeStale(id);
        _apply(action, params, msg.sender, id);
    }

    /// @notice Applies any action immediately. Only the Safe itself (a Safe transaction).
    function configure(uint8 action, bytes calldata params) external {
        _notLocked();
        if (msg.sender != safe) revert NotSafe();
        if (action > CANCEL) revert UnknownAction(action);
        _apply(action, params, msg.sender, bytes32(0));
    }

    /// @dev The setting an action changes (its version counts the applied changes); 0 for PAUSE,
    ///      UNPAUSE and CANCEL, which are never queued.
    function _settingKey(uint8 action, bytes calldata params) private pure returns (bytes32) {
        if (action == SET_BUDGET) return keccak256(abi.encode(action, abi.decode(params, (address))));
        if (action == SET_CALL_ALLOWED) {
            (address target, bytes4 selector) = abi.decode(params, (address, bytes4));
            return keccak256(abi.encode(action, target, selector));
        }
        if (action == SET_SPENDER_ALLOWED) return keccak256(abi.encode(action, abi.decode(params, (address))));
        if (action == SET_GROUP_KEY || action == SET_ROOT || action == SET_TIMELOCK) return bytes32(uint256(action));
        return bytes32(0);
    }

    /// @dev How many times the root was replaced: a change queued under an earlier root is stale.
    function _rootEpoch() private view returns (uint256) {
        return _version[bytes32(uint256(SET_ROOT))];
    }

    /// @dev Whether `action` with `params` widens the power of the quorum or the root.
    function _isWidening(uint8 action, bytes calldata params) private view returns (bool) {
        if (action == SET_GROUP_KEY || action == SET_ROOT) return true;
        if (action == SET_BUDGET) {
            (address token, uint256 limit, uint64 period) = abi.decode(params, (address, uint256, uint64));
            if (limit == 0 && period == 0) return false; // untracking narrows
            (bool tracked, uint256 oldLimit, uint256 oldPeriod,) = _budgetOf(token);
            if (!tracked) return true; // a new tracked asset can be spent at tier 1
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

    function _apply(uint8 action, bytes calldata params, address by, bytes32 id) private {
        bytes32 setting = _settingKey(action, params);
        if (setting != bytes32(0)) ++_version[setting];
        if (action == PAUSE) {
            _state |= 1 << PAUSED_SHIFT;
            emit Paused(by);
        } else if (action == UNPAUSE) {
            _state &= ~(uint256(0xff) << PAUSED_SHIFT);
            emit Unpaused(by);
        } else if (action == SET_GROUP_KEY) {
            (uint256 x, uint8 parity) = abi.decode(params, (uint256, uint8));
            if (!FrostVerifier.isValidKey(x, parity)) revert InvalidGroupKey();
            _groupKeyX = x;
            _state = (_state & ~(uint256(0xff) << PARITY_SHIFT)) | (uint256(parity) << PARITY_SHIFT);
            emit GroupKeyChanged(x, parity);
        } else if (action == SET_ROOT) {
            address next = abi.decode(params, (address));
            emit RootChanged(_root, next);
            _root = next;
        } else if (action == SET_BUDGET) {
            (address token, uint256 limit, uint64 period) = abi.decode(params, (address, uint256, uint64));
            if (limit == 0 && period == 0) _untrack(token);
            else _setBudget(token, limit, period);
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
            bytes32 queued = abi.decode(params, (bytes32));
            if (_queued[queued] == 0) revert ChangeNotQueued(queued);
            delete _queued[queued];
            emit ChangeCancelled(queued, by);
        } else {
            revert UnknownAction(action);
        }
        emit ChangeApplied(id, action, params, by);
    }

    /// @dev Sets an allow-list entry, and its mirror bit if it is (tracked ERC-20, transfer).
    function _setCallAllowed(address target, bytes4 selector, bool allowed) private {
        _callAllowed[_callKey(target, selector)] = allowed;
        if (selector == TRANSFER) {
            uint256 cfg = _tokenConfig[target];
            if (cfg != 0) _tokenConfig[target] = allowed ? cfg | CFG_TRANSFER_BIT : cfg & ~CFG_TRANSFER_BIT;
        }
    }

    /// @dev Sets a budget; a new asset starts being tracked (it must have code and answer
    ///      `balanceOf(safe)`). The current window (its end and what it spent) is kept: the new limit
    ///      applies at once, the new period from the next window.
    function _setBudget(address token, uint256 limit, uint256 period) private {
        if (period == 0 || period > U48 || limit > U128) revert InvalidParams();
        uint256 st = _state;
        if (token == address(0)) {
            st &= ~(U48 << ETH_PERIOD_SHIFT);
            _state = st | (period << ETH_PERIOD_SHIFT);
            _ethAmounts = (_ethAmounts & ~U128) | limit;
            return;
        }
        uint256 cfg = _tokenConfig[token];
        uint256 kept; // index and transfer bit
        if (cfg != 0) {
            kept = cfg & ~(U128 | (U48 << CFG_PERIOD_SHIFT));
        } else {
            if (token.code.length == 0) revert NotAnAsset(token);
            (bool ok, bytes memory ret) = token.staticcall(abi.encodeWithSelector(0x70a08231, safe));
            if (!ok || ret.length < 32) revert NotAnAsset(token);
            uint256 count = (st >> COUNT_SHIFT) & 0xff;
            if (count >= MAX_TRACKED_ASSETS) revert TooManyTrackedAssets();
            _tokenAt[count] = token;
            _state = st + (1 << COUNT_SHIFT);
            kept = (count + 1) << CFG_INDEX_SHIFT;
            if (_callAllowed[_callKey(token, TRANSFER)]) kept |= CFG_TRANSFER_BIT;
            if (_tokenSpent[token] == 0) _tokenSpent[token] = SPENT_MARKER;
        }
        _tokenConfig[token] = kept | limit | (period << CFG_PERIOD_SHIFT);
    }

    /// @dev Stops tracking an asset: tier 1 can no longer move it. What its window spent is kept.
    function _untrack(address token) private {
        uint256 st = _state;
        if (token == address(0)) {
            _state = st & ~(U48 << ETH_PERIOD_SHIFT);
            _ethAmounts &= ~U128;
            return;
        }
        uint256 cfg = _tokenConfig[token];
        if (cfg == 0) return;
        uint256 index = ((cfg >> CFG_INDEX_SHIFT) & 0xff) - 1;
        uint256 last = ((st >> COUNT_SHIFT) & 0xff) - 1;
        if (index != last) {
            address moved = _tokenAt[last];
            _tokenAt[index] = moved;
            uint256 mcfg = _tokenConfig[moved];
            _tokenConfig[moved] = (mcfg & ~(uint256(0xff) << CFG_INDEX_SHIFT)) | ((index + 1) << CFG_INDEX_SHIFT);
        }
        delete _tokenAt[last];
        delete _tokenConfig[token];
        _state = st - (1 << COUNT_SHIFT);
    }

    /// @dev Budget settings of `token` (address(0) = ETH) and what its current window spent.
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
            if (block.timestamp < (st >> ETH_END_SHIFT) & U48) spent = amounts >> 128;
        } else {
            uint256 cfg = _tokenConfig[token];
            if (cfg == 0) return (false, 0, 0, 0);
            period = (cfg >> CFG_PERIOD_SHIFT) & U48;
            limit = cfg & U128;
            uint256 used = _tokenSpent[token];
            if (block.timestamp < (used >> SPENT_END_SHIFT) & U48) spent = used & U128;
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

    function _operationDigest(Call[] calldata calls, uint256 nonce_, uint256 deadline, uint8 tier)
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
            mstore(add(m, 0x80), tier)
            let structHash := keccak256(m, 0xa0)
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

    /// @notice The nonce the next root-signed `admin` must carry.
    function adminNonce() external view returns (uint256) {
        return (_state >> ADMIN_NONCE_SHIFT) & U32;
    }

    /// @notice The nonce the next quorum-signed `admin` (PAUSE, CANCEL) must carry.
    function quorumAdminNonce() external view returns (uint256) {
        return _quorumAdminNonce;
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
        return _queued[id] & U64;
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

    /// @notice The budget of `token` (address(0) = ETH) and what its current window spent (all zero
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

    /// @notice The EIP-712 digest of Operation(calls, nonce, deadline, tier) the signers sign (tier 1:
    ///         FROST alone; tier 2: FROST and the root).
    function operationDigest(Call[] calldata calls, uint256 nonce, uint256 deadline, uint8 tier)
        external
        view
        returns (bytes32)
    {
        return _operationDigest(calls, nonce, deadline, tier);
    }

    /// @notice The EIP-712 digest of an AdminOp.
    function adminDigest(AdminOp calldata op) external view returns (bytes32) {
        return _adminDigest(op);
    }

    /// @notice When the current budget window of `token` (address(0) = ETH) ends (exclusive); a time
    ///         in the past means the next charge opens a new window.
    function budgetWindowEnd(address token) external view returns (uint256) {
        if (token == address(0)) return (_state >> ETH_END_SHIFT) & U48;
        return (_tokenSpent[token] >> SPENT_END_SHIFT) & U48;
    }
}
