// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {Vm} from "./lib/Test.sol";
import {FrostSigner} from "./lib/FrostSigner.sol";
import {UniswapFixture, IRouter} from "./lib/UniswapFixture.sol";
import {ISafe} from "./lib/ModuleFixture.sol";
import {TreasuryModule} from "../contracts/TreasuryModule.sol";
import {TestToken} from "../contracts/TestToken.sol";
import {Multicall3} from "../contracts/Multicall3.sol";
import {TestNft, Recorder} from "./Attacks.t.sol";

/// @notice An ERC-20 with a behaviour: 0 plain, 1 fee-on-transfer (the sender pays 1 % more, burnt),
///         2 `transfer` returns false and moves nothing, 3 calls a hook on every transfer (re-entry).
contract OddToken {
    uint8 public immutable mode;
    address public hook;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    constructor(uint8 mode_) {
        mode = mode_;
    }

    function setHook(address h) external {
        hook = h;
    }

    function mint(address to, uint256 amount) external {
        balanceOf[to] += amount;
    }

    function transfer(address to, uint256 amount) external returns (bool) {
        if (mode == 2) return false;
        _move(msg.sender, to, amount);
        return true;
    }

    function approve(address spender, uint256 amount) external returns (bool) {
        allowance[msg.sender][spender] = amount;
        return true;
    }

    function transferFrom(address from, address to, uint256 amount) external returns (bool) {
        require(allowance[from][msg.sender] >= amount, "allowance");
        allowance[from][msg.sender] -= amount;
        _move(from, to, amount);
        return true;
    }

    function _move(address from, address to, uint256 amount) private {
        uint256 cost = mode == 1 ? amount + amount / 100 : amount;
        require(balanceOf[from] >= cost, "balance");
        balanceOf[from] -= cost;
        balanceOf[to] += amount;
        if (mode == 3 && hook != address(0)) Reenterer(hook).onTransfer();
    }
}

/// @notice Called from a token hook in the middle of a batch: tries every way back in.
contract Reenterer {
    TreasuryModule immutable module;
    ISafe immutable safe;
    TestToken immutable wild;
    uint256 public attempts;
    uint256 public successes;

    constructor(TreasuryModule m, ISafe s, TestToken w) {
        module = m;
        safe = s;
        wild = w;
    }

    function onTransfer() external {
        attempts += 1;
        TreasuryModule.Call[] memory calls = new TreasuryModule.Call[](0);
        try module.exec(calls, module.nonce(), block.timestamp, TreasuryModule.FrostSig(1, 1, 1), "") {
            successes += 1;
        } catch {}
        try module.applyChange(4, abi.encode(address(wild), uint256(1), uint64(1)), 0) {
            successes += 1;
        } catch {}
        try wild.transferFrom(address(safe), address(this), 1) {
            successes += 1;
        } catch {}
        try module.configure(0, "") {
            successes += 1;
        } catch {}
    }
}

/// @notice The adversary: signs arbitrary tier-1 batches (FROST alone) from the allow-list and
///         beyond, moves time, makes root changes; after each exec the property is checked against
///         what the Safe actually lost.
contract Handler {
    Vm constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    TreasuryModule public module;
    ISafe public safe;
    IRouter public router;
    address public weth;
    Multicall3 public mc;
    Recorder public recorder;
    TestNft public nft;
    Reenterer public reenterer;
    FrostSigner.Key group;
    uint256 rootPk;
    address attacker = address(0xBAD);

    /// @dev Every asset the Safe holds; address(0) = ETH. Tracked or not changes with root admin.
    address[] public assets;
    /// @dev Assets the module never tracks: their balance, and the allowances the Safe gives on them,
    ///      must never change through tier 1.
    address[] public untracked;

    // ghost state per asset
    mapping(address => uint256) public ghostWindowEnd;
    mapping(address => uint256) public ghostSpent;
    /// @dev Set when a check failed (the invariant functions read it).
    string public violation;

    uint256 public execs;
    uint256 public executed;
    uint256 public adminOps;

    struct Pending {
        uint8 action;
        bytes params;
        uint256 nonce;
    }

    Pending[] pending;

    constructor(
        TreasuryModule m,
        ISafe s,
        IRouter r,
        address w,
        FrostSigner.Key memory g,
        uint256 rootPk_,
        address[] memory assets_,
        address[] memory untracked_,
        TestNft nft_,
        Reenterer re
    ) {
        module = m;
        safe = s;
        router = r;
        weth = w;
        group = g;
        rootPk = rootPk_;
        assets = assets_;
        untracked = untracked_;
        nft = nft_;
        reenterer = re;
        mc = new Multicall3();
        recorder = new Recorder();
        for (uint256 i; i < assets_.length; ++i) {
            ghostWindowEnd[assets_[i]] = m.budgetWindowEnd(assets_[i]);
        }
    }

    /// @notice The contracts the handler may name as a target (so tests can allow-list them).
    function extras() external view returns (Multicall3, Recorder) {
        return (mc, recorder);
    }

    // ───────────────────────────── actions the fuzzer calls

    /// @notice A tier-1 batch of one to three calls, each drawn from the menu by a seed.
    function execBatch(uint256 s0, uint256 s1, uint256 s2, uint8 len) external {
        uint256 n = 1 + len % 3;
        TreasuryModule.Call[] memory calls = new TreasuryModule.Call[](n);
        calls[0] = _call(s0);
        if (n > 1) calls[1] = _call(s1);
        if (n > 2) calls[2] = _call(s2);
        lastKinds = string.concat(vm.toString(s0 % 18), ",", vm.toString(s1 % 18), ",", vm.toString(s2 % 18), " n=", vm.toString(n));
        _execAndCheck(calls);
    }

    string public lastKinds;
    bool public lastOk;

    /// @notice A tier-1 operation of a single call (more of them execute than of longer batches).
    function execOne(uint256 seed) external {
        TreasuryModule.Call[] memory calls = new TreasuryModule.Call[](1);
        calls[0] = _call(seed);
        lastKinds = vm.toString(seed % 18);
        _execAndCheck(calls);
    }

    function warp(uint256 secs) external {
        vm.warp(block.timestamp + secs % 3 days);
    }

    /// @notice A root-signed change: budgets (raise, lower, period), untrack, re-track, spender toggle.
    function rootChange(uint256 seed) external {
        address a = assets[seed % assets.length];
        uint256 kind = (seed >> 8) % 5;
        uint8 action = 4;
        bytes memory params;
        uint64[3] memory periods = [uint64(1 hours), uint64(1 days), uint64(2 days)];
        if (kind == 0 || kind == 1) {
            uint256 unit = a == address(0) ? 1 ether : 1e18;
            params = abi.encode(a, ((seed >> 16) % 2_000) * unit, periods[(seed >> 32) % 3]);
        } else if (kind == 2) {
            params = abi.encode(a, uint256(0), uint64(0)); // untrack
        } else if (kind == 3) {
            action = 6;
            params = abi.encode(address(router), (seed >> 16) % 2 == 0);
        } else {
            action = 8;
            if (pending.length == 0) return;
            Pending memory p = pending[(seed >> 16) % pending.length];
            params = abi.encode(keccak256(abi.encode(p.action, p.params, p.nonce)));
        }
        if (action == 4 && (seed >> 16) % 2_000 == 0 && kind != 2) return; // limit 0 with a period: invalid
        uint256 nonce = module.adminNonce();
        TreasuryModule.AdminOp memory op = TreasuryModule.AdminOp(action, params, nonce, block.timestamp + 1 hours);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(rootPk, module.adminDigest(op));
        try module.admin(op, TreasuryModule.FrostSig(0, 0, 0), abi.encodePacked(r, s, v)) {
            adminOps += 1;
            if (action != 8) pending.push(Pending(action, params, nonce));
        } catch {}
    }

    /// @notice Anyone applies a queued change (refused if early or stale).
    function applyQueued(uint256 seed) external {
        if (pending.length == 0) return;
        Pending memory p = pending[seed % pending.length];
        try module.applyChange(p.action, p.params, p.nonce) {
            adminOps += 1;
        } catch {}
    }

    // ───────────────────────────── the call menu

    function _call(uint256 seed) internal view returns (TreasuryModule.Call memory c) {
        uint256 kind = seed % 18;
        uint256 r = seed >> 8;
        address a = _asset(r);
        address b = _asset(r >> 8);
        address who = _who(r >> 16);
        uint256 amount = _amount(r >> 24);
        uint256 deadline = block.timestamp + 1 hours;
        if (kind == 0) return _c(a, 0, abi.encodeWithSelector(TestToken.transfer.selector, who, amount));
        if (kind == 1) return _c(a, 0, abi.encodeWithSelector(TestToken.approve.selector, who, amount));
        if (kind == 2) return _c(a, 0, abi.encodeWithSignature("increaseAllowance(address,uint256)", who, amount));
        if (kind == 3) {
            return _c(
                address(router),
                0,
                abi.encodeCall(IRouter.swapExactTokensForTokens, (amount, 0, _path(a, b, r >> 40), who, deadline))
            );
        }
        if (kind == 4) {
            return _c(
                address(router),
                amount % 20 ether,
                abi.encodeCall(IRouter.swapExactETHForTokens, (0, _path(weth, b, r >> 40), who, deadline))
            );
        }
        if (kind == 5) {
            return _c(
                address(router),
                0,
                abi.encodeCall(IRouter.swapExactTokensForETH, (amount, 0, _path(a, weth, r >> 40), who, deadline))
            );
        }
        if (kind == 6) return _c(who, amount % 20 ether, "");
        if (kind == 7) return _c(address(recorder), amount % 20 ether, _junk(r >> 40));
        if (kind == 8) {
            return _c(address(safe), 0, abi.encodeWithSignature("addOwnerWithThreshold(address,uint256)", who, 1));
        }
        if (kind == 9) return _c(address(module), 0, abi.encodeCall(TreasuryModule.configure, (4, abi.encode(a, amount, uint64(1)))));
        if (kind == 10) {
            Multicall3.Call3[] memory inner = new Multicall3.Call3[](1);
            inner[0] = Multicall3.Call3(
                a, true, abi.encodeWithSelector(TestToken.transferFrom.selector, address(safe), who, amount)
            );
            return _c(address(mc), amount % 2 ether, abi.encodeCall(Multicall3.aggregate3, (inner)));
        }
        if (kind == 11) return _c(address(nft), 0, abi.encodeCall(TestNft.transferFrom, (address(safe), who, 1)));
        if (kind == 12) return _c(address(nft), 0, abi.encodeCall(TestNft.approve, (who, 1)));
        if (kind == 13) {
            return _c(a, 0, abi.encodeWithSelector(TestToken.transferFrom.selector, address(safe), who, amount));
        }
        if (kind == 14) return _c(a, 0, abi.encodeWithSignature("setApprovalForAll(address,bool)", who, true));
        if (kind == 15) return _c(weth, 0, abi.encodeWithSignature("withdraw(uint256)", amount));
        if (kind == 16) {
            c = _c(address(recorder), 0, "");
            c.operation = 1; // DELEGATECALL
            return c;
        }
        return _c(a, 0, abi.encodeWithSignature("decreaseAllowance(address,uint256)", who, amount));
    }

    function _c(address to, uint256 value, bytes memory data) internal pure returns (TreasuryModule.Call memory) {
        return TreasuryModule.Call(to, value, data, 0);
    }

    /// @dev Half the time a tracked asset (ETH as WETH), half the time an untracked one or the ERC-721.
    function _asset(uint256 r) internal view returns (address) {
        if (r % 2 == 0) {
            address a = assets[(r >> 1) % assets.length];
            return a == address(0) ? weth : a;
        }
        uint256 i = (r >> 1) % (untracked.length + 1);
        return i < untracked.length ? untracked[i] : address(nft);
    }

    function _who(uint256 r) internal view returns (address) {
        uint256 i = r % 7;
        if (i <= 2) return address(safe);
        if (i == 2) return attacker;
        if (i == 3) return address(router);
        if (i == 4) return address(mc);
        return address(reenterer);
    }

    function _amount(uint256 r) internal pure returns (uint256) {
        uint256 k = r % 4;
        if (k == 0) return (r >> 8) % 100e18;
        if (k == 1) return (r >> 8) % 2_000e18;
        if (k == 2) return (r >> 8) % 100_000e18;
        return type(uint256).max;
    }

    function _path(address a, address b, uint256 r) internal view returns (address[] memory p) {
        if (r % 3 == 0) {
            p = new address[](3);
            p[0] = a;
            p[1] = _asset(r >> 8);
            p[2] = b;
        } else {
            p = new address[](2);
            p[0] = a;
            p[1] = b;
        }
    }

    function _junk(uint256 r) internal pure returns (bytes memory) {
        uint256 k = r % 4;
        if (k == 0) return "";
        if (k == 1) return hex"00";
        if (k == 2) return hex"000000";
        return hex"00000000deadbeef";
    }

    // ───────────────────────────── exec and the property

    struct Snap {
        uint256[] bal;
        bool[] tracked;
        uint256[] limit;
        uint256[] spent;
        uint256[] untrackedBal;
        uint256[] exposure;
        address nftOwner;
        address nftApproved;
    }

    function _execAndCheck(TreasuryModule.Call[] memory calls) internal {
        execs += 1;
        Snap memory pre = _snap();
        uint256 nonce = module.nonce();
        uint256 deadline = block.timestamp + 1 hours;
        bytes32 digest = module.operationDigest(calls, nonce, deadline, 1);
        FrostSigner.Sig memory s = FrostSigner.sign(vm, group, digest);
        lastOk = false;
        try module.exec(calls, nonce, deadline, TreasuryModule.FrostSig(s.rX, s.rY, s.z), "") {
            executed += 1;
            lastOk = true;
        } catch {}
        Snap memory post = _snap();
        _checkProperty(pre, post);
    }

    function _snap() internal view returns (Snap memory sn) {
        uint256 n = assets.length;
        sn.bal = new uint256[](n);
        sn.tracked = new bool[](n);
        sn.limit = new uint256[](n);
        sn.spent = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            address a = assets[i];
            sn.bal[i] = a == address(0) ? address(safe).balance : TestToken(a).balanceOf(address(safe));
            (uint256 limit, uint64 period, uint256 spent,) = module.budget(a);
            sn.tracked[i] = period != 0;
            sn.limit[i] = limit;
            sn.spent[i] = spent;
        }
        uint256 m = untracked.length;
        sn.untrackedBal = new uint256[](m);
        sn.exposure = new uint256[](m * 4);
        for (uint256 i; i < m; ++i) {
            TestToken t = TestToken(untracked[i]);
            sn.untrackedBal[i] = t.balanceOf(address(safe));
            sn.exposure[i * 4] = t.allowance(address(safe), attacker);
            sn.exposure[i * 4 + 1] = t.allowance(address(safe), address(router));
            sn.exposure[i * 4 + 2] = t.allowance(address(safe), address(mc));
            sn.exposure[i * 4 + 3] = t.allowance(address(safe), address(reenterer));
        }
        sn.nftOwner = nft.ownerOf(1);
        sn.nftApproved = nft.getApproved(1);
    }

    function _checkProperty(Snap memory pre, Snap memory post) internal {
        for (uint256 i; i < assets.length; ++i) {
            address a = assets[i];
            uint256 loss = pre.bal[i] > post.bal[i] ? pre.bal[i] - post.bal[i] : 0;
            if (!pre.tracked[i]) {
                if (loss != 0) _fail("an untracked (unbudgeted) asset decreased");
                continue;
            }
            uint256 end = module.budgetWindowEnd(a);
            (, uint64 period,,) = module.budget(a);
            if (end != ghostWindowEnd[a]) {
                // a new window: only once the previous one ended, lasting one full period from now
                if (block.timestamp < ghostWindowEnd[a]) _fail("a budget window ended early");
                if (end != block.timestamp + period) _fail("a new window does not last one period");
                ghostWindowEnd[a] = end;
                ghostSpent[a] = 0;
            } else if (block.timestamp >= end) {
                ghostSpent[a] = 0; // the window is over and no charge opened another
            }
            ghostSpent[a] += loss;
            // what the Safe lost in this window is at most what the module charged, within the limit
            if (ghostSpent[a] > post.spent[i]) {
                _fail(
                    string.concat(
                        "a loss of a tracked asset was not charged: asset ",
                        vm.toString(i),
                        " lost ",
                        vm.toString(ghostSpent[a]),
                        " charged ",
                        vm.toString(post.spent[i]),
                        " kinds ",
                        lastKinds,
                        lastOk ? " executed" : " refused",
                        " end ",
                        vm.toString(module.budgetWindowEnd(a)),
                        " now ",
                        vm.toString(block.timestamp)
                    )
                );
            }
            if (post.spent[i] > pre.limit[i] && post.spent[i] != pre.spent[i]) _fail("charged beyond the budget");
        }
        for (uint256 i; i < untracked.length; ++i) {
            if (post.untrackedBal[i] < pre.untrackedBal[i]) _fail("an untracked asset decreased");
            for (uint256 k; k < 4; ++k) {
                if (post.exposure[i * 4 + k] > pre.exposure[i * 4 + k]) _fail("an allowance on an untracked asset grew");
            }
        }
        if (post.nftOwner != pre.nftOwner || post.nftApproved != pre.nftApproved) _fail("the ERC-721 moved or was approved");
        if (reenterer.successes() != 0) _fail("re-entry from a token hook succeeded");
    }

    function _fail(string memory why) internal {
        if (bytes(violation).length == 0) violation = why;
    }
}

/// @notice The property of TreasuryModule (see its header), under an adversarial handler.
contract InvariantTest is UniswapFixture {
    Handler handler;

    function setUp() public override {
        super.setUp();
        TestToken gov = new TestToken("Gov", "GOV", 18);
        gov.mint(address(safe), 100_000e18);
        _pool(token, gov, 1_000_000e18, 1_000_000e18);
        OddToken fee = new OddToken(1);
        OddToken liar = new OddToken(2);
        OddToken hooked = new OddToken(3);
        fee.mint(address(safe), 100_000e18);
        liar.mint(address(safe), 100_000e18);
        hooked.mint(address(safe), 100_000e18);
        address[5] memory tracked = [address(gov), address(fee), address(liar), address(hooked), address(token)];
        for (uint256 i; i < 4; ++i) {
            _configure(module.SET_BUDGET(), abi.encode(tracked[i], TOKEN_BUDGET, PERIOD));
            _configure(module.SET_CALL_ALLOWED(), abi.encode(tracked[i], TestToken.transfer.selector, true));
        }
        // untracked holdings: the airdrop (with a pool), WETH, an ERC-721, a token with increaseAllowance
        vm.deal(address(this), 100 ether);
        (bool ok,) = weth.call{value: 50 ether}(abi.encodeWithSignature("deposit()"));
        assertTrue(ok, "weth");
        (ok,) = weth.call(abi.encodeWithSignature("transfer(address,uint256)", address(safe), 50 ether));
        assertTrue(ok, "weth to safe");
        TestNft nft = new TestNft();
        nft.mint(address(safe), 1);
        // standing approvals the Safe's owners granted: the router may pull the airdrop and the
        // tracked token (it pulls only from its caller, the Safe, inside a swap the Safe makes)
        _safeExec(address(wild), abi.encodeCall(TestToken.approve, (address(router), type(uint256).max)));
        _safeExec(address(token), abi.encodeCall(TestToken.approve, (address(router), type(uint256).max)));

        Reenterer re = new Reenterer(module, safe, wild);
        hooked.setHook(address(re));
        address[] memory assets = new address[](6);
        assets[0] = address(0);
        for (uint256 i; i < 5; ++i) {
            assets[i + 1] = tracked[i];
        }
        address[] memory untrackedAssets = new address[](2);
        untrackedAssets[0] = address(wild);
        untrackedAssets[1] = weth;
        handler = new Handler(module, safe, router, weth, group, ROOT_PK, assets, untrackedAssets, nft, re);
        (Multicall3 mc, Recorder rec) = handler.extras();
        // generic entries: Multicall3 (runs as itself) and a payable contract's receive (selector 0)
        _configure(module.SET_CALL_ALLOWED(), abi.encode(address(mc), Multicall3.aggregate3.selector, true));
        _configure(module.SET_CALL_ALLOWED(), abi.encode(address(rec), bytes4(0), true));
        targetContract(address(handler));
    }

    function invariant_tier1LosesAtMostTheBudgets() public view {
        string memory v = handler.violation();
        assertTrue(bytes(v).length == 0, v);
    }

    /// @dev The handler is not vacuous: among its moves some execute, and its checks see them.
    function test_handler_movesExecuteAndAreChecked() public {
        for (uint256 i; i < 300; ++i) {
            uint256 seed = uint256(keccak256(abi.encode(i)));
            handler.execBatch(seed, seed >> 1, seed >> 2, uint8(seed >> 3));
            if (i % 10 == 0) handler.warp(seed >> 4);
            if (i % 25 == 0) handler.rootChange(seed >> 5);
            if (i % 25 == 12) handler.applyQueued(seed >> 6);
        }
        assertGt(handler.executed(), 0, "some batches executed");
        assertTrue(handler.executed() < handler.execs(), "some batches refused");
        assertTrue(bytes(handler.violation()).length == 0, handler.violation());
    }
}
