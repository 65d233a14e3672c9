// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {FrostSigner} from "./lib/FrostSigner.sol";
import {UniswapFixture, IRouter} from "./lib/UniswapFixture.sol";
import {TreasuryModule} from "../contracts/TreasuryModule.sol";
import {TestToken} from "../contracts/TestToken.sol";

/// @notice A minimal ERC-721 (its `approve(address,uint256)` shares the ERC-20 selector).
contract TestNft {
    mapping(uint256 => address) public ownerOf;
    mapping(uint256 => address) public getApproved;

    function mint(address to, uint256 id) external {
        ownerOf[id] = to;
    }

    function balanceOf(address) external pure returns (uint256) {
        return 1;
    }

    function approve(address spender, uint256 id) external {
        require(ownerOf[id] == msg.sender, "not owner");
        getApproved[id] = spender;
    }

    function transferFrom(address from, address to, uint256 id) external {
        require(ownerOf[id] == from && (msg.sender == from || getApproved[id] == msg.sender), "not allowed");
        ownerOf[id] = to;
        getApproved[id] = address(0);
    }
}

/// @notice An ERC-20 with OpenZeppelin's (pre-v5) `increaseAllowance`.
contract IncToken is TestToken {
    mapping(address => mapping(address => uint256)) public extra;

    constructor() TestToken("Inc", "INC", 18) {}

    function increaseAllowance(address spender, uint256 added) external returns (bool) {
        extra[msg.sender][spender] += added;
        return true;
    }
}

/// @notice An ERC-20 whose `transfer` returns false and moves nothing.
contract FalseToken {
    mapping(address => uint256) public balanceOf;

    function mint(address to, uint256 amount) external {
        balanceOf[to] += amount;
    }

    function transfer(address, uint256) external pure returns (bool) {
        return false;
    }

    function approve(address, uint256) external pure returns (bool) {
        return false;
    }
}

/// @notice Counts every call that reaches its fallback; accepts plain ETH.
contract Recorder {
    uint256 public hits;

    receive() external payable {}

    fallback() external payable {
        hits += 1;
    }
}

/// @notice A would-be tracked asset whose `balanceOf` reverts.
contract BrokenBalance {
    function balanceOf(address) external pure returns (uint256) {
        revert("no balance");
    }
}

/// @notice Every item of issue 12, as the attacker plays it: tier-1 (FROST alone) signatures, the
///         allow-list `treasury dev` deploys, real Safe 1.5.0 and Uniswap V2. Each test asserts the
///         module's promise (what must not happen), not an error name.
contract AttacksTest is UniswapFixture {
    event ChangeApplied(bytes32 indexed id, uint8 indexed action, bytes params, address by);
    event Unpaused(address by);
    event RootChanged(address indexed previous, address indexed root);
    event GroupKeyChanged(uint256 x, uint8 parity);

    address attacker = address(0xBAD);

    // ───────────────────────────── untracked assets drained by approve + swap

    function test_attack_approveUntrackedThenSwapToAttacker() public {
        uint256 held = wild.balanceOf(address(safe));
        _try(
            _calls2(
                _approveCall(address(wild), address(router), held),
                _swapCall(held, _path(address(wild), address(token)), attacker)
            )
        );
        assertEq(wild.balanceOf(address(safe)), held, "untracked asset left the Safe");
        assertEq(wild.allowance(address(safe), address(router)), 0, "approval on an untracked asset granted");
    }

    function test_attack_approveErc721() public {
        TestNft nft = new TestNft();
        nft.mint(address(safe), 7);
        _try(_one(_approveCall(address(nft), address(router), 7)));
        assertEq(nft.getApproved(7), address(0), "tier 1 approved an ERC-721");
    }

    function test_attack_increaseAllowanceOnUntracked() public {
        IncToken inc = new IncToken();
        inc.mint(address(safe), 1e18);
        _try(_one(_c(address(inc), 0, abi.encodeCall(IncToken.increaseAllowance, (address(router), 1e18)))));
        assertEq(inc.extra(address(safe), address(router)), 0, "tier 1 raised an allowance on an untracked token");
    }

    function test_attack_swapTrackedToAnyRecipient() public {
        uint256 before = token.balanceOf(attacker) + wild.balanceOf(attacker);
        _try(
            _calls2(
                _approveCall(address(token), address(router), 100e18),
                _swapCall(100e18, _path(address(token), address(wild)), attacker)
            )
        );
        assertEq(token.balanceOf(attacker) + wild.balanceOf(attacker), before, "a swap paid someone else");
    }

    function test_attack_ethWithoutBudgetIsUnlimited() public {
        // a module whose ETH has no budget: ETH must then be unspendable at tier 1
        TreasuryModule m2 = new TreasuryModule(address(safe), group.x, group.parity, rootAddr, DELAY, multiSend);
        _safeExec(address(safe), abi.encodeWithSignature("enableModule(address)", address(m2)));
        module = m2;
        uint256 before = address(safe).balance;
        _try(_one(_c(attacker, 50 ether, "")));
        assertEq(address(safe).balance, before, "ETH without a budget left the Safe");
    }

    // ───────────────────────────── net measurement launders outflow

    function test_attack_netLaundering() public {
        // sell the untracked asset into the tracked one, pay the tracked one out: nets to zero
        uint256 held = wild.balanceOf(address(safe));
        uint256 tokenBefore = token.balanceOf(address(safe));
        TreasuryModule.Call[] memory calls = new TreasuryModule.Call[](3);
        calls[0] = _approveCall(address(wild), address(router), held);
        calls[1] = _swapCall(held, _path(address(wild), address(token)), address(safe));
        calls[2] = _pay(attacker, 33_000e18);
        _try(calls);
        assertEq(wild.balanceOf(address(safe)), held, "untracked asset sold");
        assertLe(token.balanceOf(attacker), TOKEN_BUDGET, "more than the budget reached the attacker");
        assertGe(token.balanceOf(address(safe)) + TOKEN_BUDGET, tokenBefore, "tracked outflow above budget");
    }

    function test_attack_grossNotNet_trackedIntoTracked() public {
        // two tracked tokens: selling one into the other hides nothing; each outflow is charged
        TestToken gov = new TestToken("Gov", "GOV", 18);
        gov.mint(address(safe), 100_000e18);
        _pool(token, gov, 1_000_000e18, 1_000_000e18);
        _configure(module.SET_BUDGET(), abi.encode(address(gov), TOKEN_BUDGET, PERIOD));
        _configure(module.SET_CALL_ALLOWED(), abi.encode(address(gov), TestToken.transfer.selector, true));
        TreasuryModule.Call[] memory calls = new TreasuryModule.Call[](3);
        calls[0] = _approveCall(address(gov), address(router), 900e18);
        calls[1] = _swapCall(900e18, _path(address(gov), address(token)), address(safe));
        calls[2] = _pay(attacker, 1_000e18);
        assertTrue(_try(calls), "within both budgets");
        (,, uint256 spent,) = module.budget(address(token));
        assertEq(spent, 1_000e18, "the payment is charged in full, the swap's inflow does not offset it");
        (,, spent,) = module.budget(address(gov));
        assertEq(spent, 900e18, "the sold token is charged");
    }

    // ───────────────────────────── admin: queued changes, windows, tracking

    function test_attack_staleQueuedWideningOverridesNarrowing() public {
        bytes memory widen = abi.encode(address(token), TOKEN_BUDGET * 50, PERIOD);
        uint256 n = module.adminNonce();
        _rootAdmin(module.SET_BUDGET(), widen); // queued
        _rootAdmin(module.SET_BUDGET(), abi.encode(address(token), TOKEN_BUDGET / 2, PERIOD)); // narrowing, at once
        vm.warp(block.timestamp + DELAY);
        try module.applyChange(4, widen, n) {} catch {}
        (uint256 limit,,,) = module.budget(address(token));
        assertEq(limit, TOKEN_BUDGET / 2, "a stale queued widening undid a later narrowing");
    }

    function test_attack_periodChangeRefillsBudget() public {
        // 1 000 s into a daily window, spend it all; the root lengthens the period (narrowing, at once)
        // to a period whose window boundary is 10 s away
        uint256 p2 = 100_000;
        uint256 t0 = p2 * 17_000 - 10;
        vm.warp(t0);
        assertGt(PERIOD - t0 % PERIOD, 3_600, "the daily window has more than an hour to run");
        _exec(_one(_pay(alice, TOKEN_BUDGET)));
        _rootAdmin(module.SET_BUDGET(), abi.encode(address(token), TOKEN_BUDGET, uint64(p2)));
        vm.warp(t0 + 20);
        uint256 before = token.balanceOf(alice);
        _try(_one(_pay(alice, TOKEN_BUDGET)));
        assertEq(token.balanceOf(alice), before, "a period change ended the window early: budget refilled");
    }

    function test_attack_hugePeriodOverflowsWindowEnd() public {
        // lengthening a period narrows, so the root applies it at once; a period so long that
        // now + period no longer fits the 48-bit window end must not open windows already over
        uint64 huge = type(uint48).max;
        _rootAdmin(module.SET_BUDGET(), abi.encode(address(token), TOKEN_BUDGET, huge));
        _rootAdmin(module.SET_BUDGET(), abi.encode(address(0), ETH_BUDGET, huge));
        (, uint64 period,,) = module.budget(address(token));
        assertEq(period, huge, "the longer period applied at once");
        uint256 before = token.balanceOf(attacker);
        for (uint256 i; i < 5; ++i) {
            _try(_calls2(_pay(attacker, TOKEN_BUDGET), _c(attacker, ETH_BUDGET, "")));
        }
        assertLe(token.balanceOf(attacker) - before, TOKEN_BUDGET, "tracked token outflow above its budget");
        assertLe(attacker.balance, ETH_BUDGET, "ETH outflow above its budget");
    }

    function test_attack_genericEntryOnUntrackedTokenItself() public {
        // A generic entry on an untracked asset's own contract holds no Safe allowance, so the stated
        // vetting rule admits it; unwrapping WETH (untracked) is such an entry, and it makes an
        // untracked balance decrease. The same shape drains ERC-4626 shares (`redeem` to anyone).
        vm.deal(address(this), 10 ether);
        (bool ok,) = weth.call{value: 10 ether}(abi.encodeWithSignature("deposit()"));
        assertTrue(ok, "deposit");
        (ok,) = weth.call(abi.encodeWithSignature("transfer(address,uint256)", address(safe), 10 ether));
        assertTrue(ok, "fund");
        bytes4 withdraw = bytes4(keccak256("withdraw(uint256)"));
        _configure(module.SET_CALL_ALLOWED(), abi.encode(weth, withdraw, true));
        uint256 before = TestToken(weth).balanceOf(address(safe));
        _try(_one(_c(weth, 0, abi.encodeWithSelector(withdraw, 10 ether))));
        assertEq(TestToken(weth).balanceOf(address(safe)), before, "an untracked asset decreased at tier 1");
    }

    function test_attack_replacedRootsQueuedWideningStillApplies() public {
        // a compromised root queues a spender; the Safe replaces the root at once, but anyone could
        // still apply the old root's widening once its timelock passed
        address evil = address(0xE71);
        bytes memory widen = abi.encode(evil, true);
        uint256 n = module.adminNonce();
        _rootAdmin(module.SET_SPENDER_ALLOWED(), widen);
        _configure(module.SET_ROOT(), abi.encode(vm.addr(0xC0FFEE)));
        vm.warp(block.timestamp + DELAY);
        try module.applyChange(6, widen, n) {} catch {}
        assertFalse(module.isSpenderAllowed(evil), "a widening queued by the replaced root applied");
    }

    function test_attack_trackingCodelessBricksTier1() public {
        _rootTrack(address(0xDEAD0001));
        // a swap and a payment must still work
        assertTrue(
            _try(
                _calls2(_approveCall(address(token), address(router), 10e18), _swapToEth(10e18))
            ),
            "tier 1 bricked by a tracked address without code"
        );
    }

    function test_attack_trackingRevertingBalanceBricksTier1() public {
        _rootTrack(address(new BrokenBalance()));
        assertTrue(
            _try(
                _calls2(_approveCall(address(token), address(router), 10e18), _swapToEth(10e18))
            ),
            "tier 1 bricked by a tracked asset whose balanceOf reverts"
        );
    }

    function test_attack_rootFillsTrackingSlots() public {
        // the root alone, in a few seconds, fills every slot: the Safe can then track nothing
        for (uint256 i; i < 40; ++i) {
            TestToken junk = new TestToken("Junk", "J", 18);
            try module.admin(_byRoot(4, abi.encode(address(junk), uint256(1), PERIOD)).op, _noFrost(), _byRoot(4, abi.encode(address(junk), uint256(1), PERIOD)).rootSig) {}
                catch {}
        }
        TestToken real = new TestToken("Real", "R", 18);
        _configure(module.SET_BUDGET(), abi.encode(address(real), uint256(1e18), PERIOD));
        (uint256 limit,,,) = module.budget(address(real));
        assertEq(limit, 1e18, "the Safe could not track a real asset");
    }

    function test_attack_safeCannotUntrack() public {
        _configure(module.SET_BUDGET(), abi.encode(address(token), uint256(0), uint64(0)));
        address[] memory t = module.trackedAssets();
        for (uint256 i; i < t.length; ++i) {
            assertTrue(t[i] != address(token), "still tracked");
        }
    }

    // ───────────────────────────── quorum vs its own rotation; shared admin nonce

    function test_attack_quorumCancelsItsOwnRotation() public {
        FrostSigner.Key memory k2 = FrostSigner.key(vm, 0x5EC0DE);
        bytes memory params = abi.encode(k2.x, k2.parity);
        uint256 n = module.adminNonce();
        _rootAdmin(module.SET_GROUP_KEY(), params);
        bytes32 id = _changeId(2, params, n);
        SignedAdmin memory c = _byQuorum(module.CANCEL(), abi.encode(id));
        try module.admin(c.op, c.frostSig, c.rootSig) {} catch {}
        assertGt(module.queuedChange(id), 0, "the quorum vetoed its own replacement");
    }

    function test_attack_quorumPauseTakesRootNonce() public {
        SignedAdmin memory rootOp = _byRoot(module.SET_SPENDER_ALLOWED(), abi.encode(address(router), false));
        _admin(_byQuorum(module.PAUSE(), "")); // the quorum front-runs the root
        _admin(rootOp);
        assertFalse(module.isSpenderAllowed(address(router)), "the root's change was refused");
    }

    // ───────────────────────────── signature stripping

    function test_attack_rootSignatureStripped() public {
        Signed memory s = _sign2(_one(_pay(attacker, 600e18)));
        s.rootSig = "";
        try module.exec(s.calls, s.nonce, s.deadline, s.sig, s.rootSig) {} catch {}
        assertEq(token.balanceOf(attacker), 0, "a tier-2 operation ran as tier 1");
        (,, uint256 spent,) = module.budget(address(token));
        assertEq(spent, 0, "stripped operation ate the budget");
    }

    // ───────────────────────────── selector 0

    function test_attack_selectorZeroAdmitsFourZeroBytesAndShortData() public {
        Recorder r = new Recorder();
        _configure(module.SET_CALL_ALLOWED(), abi.encode(address(r), bytes4(0), true));
        _try(_one(_c(address(r), 0, hex"00000000deadbeef")));
        _try(_one(_c(address(r), 0, hex"00")));
        _try(_one(_c(address(r), 0, hex"000000")));
        assertEq(r.hits(), 0, "selector 0 admitted calldata other than empty");
        assertTrue(_try(_one(_c(address(r), 1 ether, ""))), "empty calldata with value is what selector 0 allows");
    }

    // ───────────────────────────── revoking a removed spender

    function test_attack_removedSpenderCannotBeRevoked() public {
        _exec(_one(_approveCall(address(token), address(router), 500e18)));
        _rootAdmin(module.SET_SPENDER_ALLOWED(), abi.encode(address(router), false));
        assertTrue(_try(_one(_approveCall(address(token), address(router), 0))), "approve(x, 0) refused");
        assertEq(token.allowance(address(safe), address(router)), 0, "allowance not revoked");
    }

    // ───────────────────────────── false-returning token

    function test_attack_falseReturningTransferExecuted() public {
        FalseToken f = new FalseToken();
        f.mint(address(safe), 1e18);
        _configure(module.SET_BUDGET(), abi.encode(address(f), uint256(1e18), PERIOD));
        _configure(module.SET_CALL_ALLOWED(), abi.encode(address(f), TestToken.transfer.selector, true));
        uint256 n = module.nonce();
        _try(_one(_c(address(f), 0, abi.encodeCall(TestToken.transfer, (alice, 1e18)))));
        assertEq(module.nonce(), n, "a transfer that returned false counted as executed");
    }

    // ───────────────────────────── events say who did what

    function test_attack_eventsNameIdAndCaller() public {
        address newRoot = vm.addr(0x1234);
        bytes memory params = abi.encode(newRoot);
        uint256 n = module.adminNonce();
        _rootAdmin(module.SET_ROOT(), params);
        vm.warp(block.timestamp + DELAY);
        vm.expectEmit(address(module));
        emit RootChanged(rootAddr, newRoot);
        vm.expectEmit(address(module));
        emit ChangeApplied(_changeId(3, params, n), 3, params, address(0xCAFE));
        vm.prank(address(0xCAFE));
        module.applyChange(3, params, n);

        _admin(_byQuorum(module.PAUSE(), ""));
        vm.expectEmit(address(module));
        emit Unpaused(address(safe));
        _configure(module.UNPAUSE(), "");
    }

    // ───────────────────────────── helpers

    function _swapToEth(uint256 amount) internal view returns (TreasuryModule.Call memory) {
        return _c(
            address(router),
            0,
            abi.encodeCall(
                IRouter.swapExactTokensForETH,
                (amount, 0, _path(address(token), weth), address(safe), block.timestamp + 1 hours)
            )
        );
    }

    function _noFrost() internal pure returns (TreasuryModule.FrostSig memory) {
        return TreasuryModule.FrostSig(0, 0, 0);
    }

    /// @dev The root tracks `asset` (and applies it after the timelock if it was queued); reverts are
    ///      swallowed: the test then checks tier 1 still works.
    function _rootTrack(address asset) internal {
        bytes memory params = abi.encode(asset, uint256(1), PERIOD);
        uint256 n = module.adminNonce();
        SignedAdmin memory a = _byRoot(module.SET_BUDGET(), params);
        try module.admin(a.op, a.frostSig, a.rootSig) {} catch {}
        vm.warp(block.timestamp + DELAY);
        try module.applyChange(4, params, n) {} catch {}
    }
}
