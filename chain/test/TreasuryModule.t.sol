// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {Test, Vm, console} from "./lib/Test.sol";
import {FrostSigner} from "./lib/FrostSigner.sol";
import {ModuleFixture, ISafe, Scribble} from "./lib/ModuleFixture.sol";
import {TreasuryModule} from "../contracts/TreasuryModule.sol";
import {TestToken} from "../contracts/TestToken.sol";

/// @notice Every rule of the treasury module, against a real Safe 1.5.0.
contract TreasuryModuleTest is ModuleFixture {
    event Executed(uint256 indexed nonce, bytes32 indexed digest, uint8 tier, uint256 calls);
    event ChangeQueued(bytes32 indexed id, uint8 action, bytes params, uint256 eta);
    event ChangeCancelled(bytes32 indexed id, address by);
    event Paused(address by);

    // ───────────────────────────────────────────── set-up and views

    function test_setup_views() public view {
        assertEq(module.safe(), address(safe), "safe");
        assertEq(module.root(), rootAddr, "root");
        (uint256 x, uint8 p) = module.groupKey();
        assertEq(x, group.x, "group x");
        assertEq(p, group.parity, "group parity");
        assertEq(module.timelockDelay(), DELAY, "delay");
        assertEq(module.nonce(), 0, "nonce");
        assertEq(module.adminNonce(), 0, "admin nonce");
        assertFalse(module.paused(), "paused");
        address[] memory t = module.trackedAssets();
        assertEq(t.length, 2, "tracked");
        assertEq(t[0], address(0), "eth tracked first");
        assertEq(t[1], address(token), "token tracked");
        (uint256 limit, uint64 period, uint256 spent, uint256 remaining) = module.budget(address(token));
        assertEq(limit, TOKEN_BUDGET, "limit");
        assertEq(period, PERIOD, "period");
        assertEq(spent, 0, "spent");
        assertEq(remaining, TOKEN_BUDGET, "remaining");
        assertTrue(module.isCallAllowed(address(token), TestToken.transfer.selector), "transfer allowed");
        assertFalse(module.isCallAllowed(address(token), TestToken.approve.selector), "approve not a call");
    }

    // ───────────────────────────────────────────── digests (identical to alloy's EIP-712, chain/src/operation.rs)

    function test_operationDigest_matchesEip712() public view {
        TreasuryModule.Call[] memory calls = new TreasuryModule.Call[](2);
        calls[0] = _c(address(token), 0, abi.encodeCall(TestToken.transfer, (alice, 5e18)));
        calls[1] = TreasuryModule.Call(bob, 1 ether, hex"", 1);
        string memory json = string.concat(
            '{"types":{"EIP712Domain":[{"name":"name","type":"string"},{"name":"version","type":"string"},',
            '{"name":"chainId","type":"uint256"},{"name":"verifyingContract","type":"address"}],',
            '"Operation":[{"name":"calls","type":"Call[]"},{"name":"nonce","type":"uint256"},{"name":"deadline","type":"uint256"},{"name":"tier","type":"uint8"}],',
            '"Call":[{"name":"to","type":"address"},{"name":"value","type":"uint256"},{"name":"data","type":"bytes"},{"name":"operation","type":"uint8"}]},',
            '"primaryType":"Operation","domain":{"name":"TreasuryModule","version":"1","chainId":',
            vm.toString(block.chainid),
            ',"verifyingContract":"',
            vm.toString(address(module)),
            '"},"message":{"calls":[{"to":"',
            vm.toString(address(token)),
            '","value":"0","data":"',
            vm.toString(calls[0].data),
            '","operation":0},{"to":"',
            vm.toString(bob),
            '","value":"1000000000000000000","data":"0x","operation":1}],"nonce":"7","deadline":"1800000000","tier":2}}'
        );
        assertEq(module.operationDigest(calls, 7, 1_800_000_000, 2), vm.eip712HashTypedData(json), "operation digest");
    }

    function test_adminDigest_matchesEip712() public view {
        bytes memory params = abi.encode(address(token), uint256(5), uint64(3600));
        TreasuryModule.AdminOp memory op = TreasuryModule.AdminOp(4, params, 3, 1_800_000_000);
        string memory json = string.concat(
            '{"types":{"EIP712Domain":[{"name":"name","type":"string"},{"name":"version","type":"string"},',
            '{"name":"chainId","type":"uint256"},{"name":"verifyingContract","type":"address"}],',
            '"AdminOp":[{"name":"action","type":"uint8"},{"name":"params","type":"bytes"},{"name":"nonce","type":"uint256"},{"name":"deadline","type":"uint256"}]},',
            '"primaryType":"AdminOp","domain":{"name":"TreasuryModule","version":"1","chainId":',
            vm.toString(block.chainid),
            ',"verifyingContract":"',
            vm.toString(address(module)),
            '"},"message":{"action":4,"params":"',
            vm.toString(params),
            '","nonce":"3","deadline":"1800000000"}}'
        );
        assertEq(module.adminDigest(op), vm.eip712HashTypedData(json), "admin digest");
    }

    function test_domainSeparator_followsChainId() public {
        bytes32 d1 = module.domainSeparator();
        vm.chainId(999);
        bytes32 d2 = module.domainSeparator();
        assertTrue(d1 != d2, "domain binds chain id");
        bytes32 expected = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("TreasuryModule"),
                keccak256("1"),
                uint256(999),
                address(module)
            )
        );
        assertEq(d2, expected, "domain separator");
    }

    // ───────────────────────────────────────────── tier 1: happy paths

    function test_tier1_erc20Payment() public {
        Signed memory s = _sign(_one(_pay(alice, 100e18)));
        vm.expectEmit(address(module));
        emit Executed(0, s.digest, 1, 1);
        _submit(s);
        assertEq(token.balanceOf(alice), 101e18, "alice paid");
        assertEq(module.nonce(), 1, "nonce incremented");
        (,, uint256 spent, uint256 remaining) = module.budget(address(token));
        assertEq(spent, 100e18, "spent");
        assertEq(remaining, TOKEN_BUDGET - 100e18, "remaining");
    }

    function test_tier1_ethToEoa_allowedAndBudgeted() public {
        _exec(_one(_c(alice, 1 ether, "")));
        assertEq(alice.balance, 1 ether, "eth paid");
        (,, uint256 spent,) = module.budget(address(0));
        assertEq(spent, 1 ether, "eth spent");
    }

    function test_tier1_ethToContractNeedsAllowList() public {
        Signed memory s = _sign(_one(_c(address(token), 1 ether, "")));
        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.CallNotAllowed.selector, 0, address(token), bytes4(0)));
        _submit(s);
    }

    function test_tier1_shortCalldataSelectorIsZeroPadded() public {
        Signed memory s = _sign(_one(_c(address(token), 0, hex"a905")));
        vm.expectRevert(
            abi.encodeWithSelector(TreasuryModule.CallNotAllowed.selector, 0, address(token), bytes4(0))
        );
        _submit(s);
    }

    function test_tier1_inflowIsNotCharged() public {
        // a call that moves nothing out still executes; inflows do not create negative spending
        token.mint(address(safe), 5e18);
        _exec(_one(_pay(alice, 1e18)));
        (,, uint256 spent,) = module.budget(address(token));
        assertEq(spent, 1e18, "only the outflow");
    }

    // ───────────────────────────────────────────── nonce, deadline, signatures

    function test_replayedNonce_reverts() public {
        Signed memory s = _sign(_one(_pay(alice, 1e18)));
        _submit(s);
        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.BadNonce.selector, 1, 0));
        _submit(s);
    }

    function test_futureNonce_reverts() public {
        Signed memory s = _sign(_one(_pay(alice, 1e18)));
        s.nonce = 5;
        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.BadNonce.selector, 0, 5));
        _submit(s);
    }

    function test_expiredDeadline_reverts() public {
        Signed memory s = _sign(_one(_pay(alice, 1e18)));
        vm.warp(s.deadline + 1);
        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.Expired.selector, s.deadline, s.deadline + 1));
        _submit(s);
    }

    function test_deadlineInclusive() public {
        Signed memory s = _sign(_one(_pay(alice, 1e18)));
        vm.warp(s.deadline);
        _submit(s);
    }

    function test_wrongFrostKey_reverts() public {
        Signed memory s = _sign(_one(_pay(alice, 1e18)));
        s.sig = _frost(FrostSigner.key(vm, 0xBAD), s.digest);
        vm.expectRevert(TreasuryModule.InvalidFrostSignature.selector);
        _submit(s);
    }

    function test_tamperedCalls_reverts() public {
        Signed memory s = _sign(_one(_pay(alice, 1e18)));
        s.calls[0] = _pay(bob, 1e18);
        vm.expectRevert(TreasuryModule.InvalidFrostSignature.selector);
        _submit(s);
    }

    function test_tamperedDeadline_reverts() public {
        Signed memory s = _sign(_one(_pay(alice, 1e18)));
        s.deadline += 1;
        vm.expectRevert(TreasuryModule.InvalidFrostSignature.selector);
        _submit(s);
    }

    function test_signatureForOtherModule_reverts() public {
        TreasuryModule other = new TreasuryModule(address(safe), group.x, group.parity, rootAddr, DELAY, multiSend);
        TreasuryModule.Call[] memory calls = _one(_pay(alice, 1e18));
        bytes32 d = other.operationDigest(calls, 0, block.timestamp + 1, 1);
        TreasuryModule.FrostSig memory sig = _frost(group, d);
        vm.expectRevert(TreasuryModule.InvalidFrostSignature.selector);
        module.exec(calls, 0, block.timestamp + 1, sig, "");
    }

    // ───────────────────────────────────────────── tier 1 restrictions

    function test_tier1_delegatecall_reverts() public {
        Scribble sc = new Scribble();
        _configure(module.SET_CALL_ALLOWED(), abi.encode(address(sc), Scribble.scribble.selector, true));
        TreasuryModule.Call[] memory calls = new TreasuryModule.Call[](2);
        calls[0] = _pay(alice, 1e18);
        calls[1] = TreasuryModule.Call(address(sc), 0, abi.encodeCall(Scribble.scribble, (1)), 1);
        Signed memory s = _sign(calls);
        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.DelegateCallNotAllowed.selector, 1));
        _submit(s);
    }

    function test_tier1_callNotAllowed_reverts() public {
        Scribble sc = new Scribble();
        Signed memory s = _sign(_one(_c(address(sc), 0, abi.encodeCall(Scribble.scribble, (1)))));
        vm.expectRevert(
            abi.encodeWithSelector(TreasuryModule.CallNotAllowed.selector, 0, address(sc), Scribble.scribble.selector)
        );
        _submit(s);
    }

    function test_tier1_selectorNotAllowedOnAllowedTarget_reverts() public {
        bytes memory data = abi.encodeCall(TestToken.transferFrom, (alice, bob, 1));
        Signed memory s = _sign(_one(_c(address(token), 0, data)));
        vm.expectRevert(
            abi.encodeWithSelector(
                TreasuryModule.CallNotAllowed.selector, 0, address(token), TestToken.transferFrom.selector
            )
        );
        _submit(s);
    }

    function test_tier1_allowedSelectorOnOtherTarget_reverts() public {
        TestToken other = new TestToken("Other", "OTH", 18);
        other.mint(address(safe), 10e18);
        Signed memory s = _sign(_one(_c(address(other), 0, abi.encodeCall(TestToken.transfer, (alice, 1)))));
        vm.expectRevert(
            abi.encodeWithSelector(TreasuryModule.CallNotAllowed.selector, 0, address(other), TestToken.transfer.selector)
        );
        _submit(s);
    }

    function test_tier1_approveNeedsAllowedSpender() public {
        Signed memory s = _sign(_one(_c(address(token), 0, abi.encodeCall(TestToken.approve, (bob, 5e18)))));
        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.SpenderNotAllowed.selector, 0, bob));
        _submit(s);

        _configure(module.SET_SPENDER_ALLOWED(), abi.encode(bob, true));
        _submit(_sign(_one(_c(address(token), 0, abi.encodeCall(TestToken.approve, (bob, 5e18))))));
        assertEq(token.allowance(address(safe), bob), 5e18, "approved");
    }

    function test_tier1_increaseAllowanceNeedsAllowedSpender() public {
        bytes memory data = abi.encodeWithSelector(bytes4(0x39509351), alice, uint256(1));
        Signed memory s = _sign(_one(_c(address(token), 0, data)));
        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.SpenderNotAllowed.selector, 0, alice));
        _submit(s);
    }

    function test_tier1_approveAllowListIsNotEnoughAsCallEntry() public {
        // allow-listing (token, approve) as a call does not bypass the spender rule
        _configure(module.SET_CALL_ALLOWED(), abi.encode(address(token), TestToken.approve.selector, true));
        Signed memory s = _sign(_one(_c(address(token), 0, abi.encodeCall(TestToken.approve, (bob, 1)))));
        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.SpenderNotAllowed.selector, 0, bob));
        _submit(s);
    }

    function test_tier1_failingCall_revertsWithReason() public {
        bytes memory data = abi.encodeCall(TestToken.transfer, (alice, 2_000_000e18));
        Signed memory s = _sign(_one(_c(address(token), 0, data)));
        bytes memory reason = abi.encodeWithSelector(
            TestToken.InsufficientBalance.selector, address(safe), 1_000_000e18, 2_000_000e18
        );
        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.CallFailed.selector, 0, reason));
        _submit(s);
        assertEq(module.nonce(), 0, "nonce not consumed by a reverted batch");
    }

    // ───────────────────────────────────────────── budgets

    function test_budget_exceededInOneCall() public {
        Signed memory s = _sign(_one(_pay(alice, TOKEN_BUDGET + 1)));
        vm.expectRevert(
            abi.encodeWithSelector(TreasuryModule.BudgetExceeded.selector, address(token), TOKEN_BUDGET + 1, TOKEN_BUDGET)
        );
        _submit(s);
    }

    function test_budget_exactLimitPasses() public {
        _exec(_one(_pay(alice, TOKEN_BUDGET)));
        (,,, uint256 remaining) = module.budget(address(token));
        assertEq(remaining, 0, "exhausted");
    }

    function test_budget_exceededAcrossCallsInOneBatch() public {
        TreasuryModule.Call[] memory calls = new TreasuryModule.Call[](3);
        calls[0] = _pay(alice, 400e18);
        calls[1] = _pay(bob, 400e18);
        calls[2] = _pay(alice, 300e18);
        Signed memory s = _sign(calls);
        vm.expectRevert(
            abi.encodeWithSelector(TreasuryModule.BudgetExceeded.selector, address(token), 1_100e18, TOKEN_BUDGET)
        );
        _submit(s);
    }

    function test_budget_exceededAcrossExecsInOnePeriod() public {
        _exec(_one(_pay(alice, 600e18)));
        vm.warp(block.timestamp + 1 hours);
        Signed memory s = _sign(_one(_pay(bob, 500e18)));
        vm.expectRevert(
            abi.encodeWithSelector(TreasuryModule.BudgetExceeded.selector, address(token), 500e18, 400e18)
        );
        _submit(s);
        _exec(_one(_pay(bob, 400e18)));
    }

    function test_budget_ethExceeded() public {
        Signed memory s = _sign(_one(_c(alice, ETH_BUDGET + 1, "")));
        vm.expectRevert(
            abi.encodeWithSelector(TreasuryModule.BudgetExceeded.selector, address(0), ETH_BUDGET + 1, ETH_BUDGET)
        );
        _submit(s);
    }

    function test_budget_refilledNextPeriod() public {
        _exec(_one(_pay(alice, TOKEN_BUDGET)));
        Signed memory s = _sign(_one(_pay(alice, 1)));
        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.BudgetExceeded.selector, address(token), 1, 0));
        _submit(s);
        // the window opened by the first charge lasts one period
        assertEq(module.budgetWindowEnd(address(token)), block.timestamp + PERIOD, "window end");
        vm.warp(block.timestamp + PERIOD - 1);
        s = _sign(_one(_pay(alice, 1)));
        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.BudgetExceeded.selector, address(token), 1, 0));
        _submit(s);
        vm.warp(block.timestamp + 1);
        (,, uint256 spent, uint256 remaining) = module.budget(address(token));
        assertEq(spent, 0, "spent reset");
        assertEq(remaining, TOKEN_BUDGET, "refilled");
        _exec(_one(_pay(alice, TOKEN_BUDGET)));
    }

    function test_budget_untrackedAssetNotMovable() public {
        // even allow-listed, a token without a budget cannot be moved at tier 1
        TestToken other = new TestToken("Other", "OTH", 18);
        other.mint(address(safe), 1_000_000e18);
        _configure(module.SET_CALL_ALLOWED(), abi.encode(address(other), TestToken.transfer.selector, true));
        Signed memory s = _sign(_one(_c(address(other), 0, abi.encodeCall(TestToken.transfer, (alice, 1)))));
        vm.expectRevert(
            abi.encodeWithSelector(TreasuryModule.CallNotAllowed.selector, 0, address(other), TestToken.transfer.selector)
        );
        _submit(s);
    }

    // ───────────────────────────────────────────── tier 2

    function test_tier2_executesWhatTier1Refuses() public {
        Scribble sc = new Scribble();
        TreasuryModule.Call[] memory calls = new TreasuryModule.Call[](3);
        calls[0] = TreasuryModule.Call(address(sc), 0, abi.encodeCall(Scribble.scribble, (42)), 1); // delegatecall
        calls[1] = _pay(alice, TOKEN_BUDGET * 5); // over budget
        calls[2] = _c(address(token), 0, abi.encodeCall(TestToken.approve, (bob, 7))); // spender not listed
        Signed memory t1 = _sign(calls);
        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.DelegateCallNotAllowed.selector, 0));
        _submit(t1);

        Signed memory s = _sign2(calls);
        vm.expectEmit(address(module));
        emit Executed(0, s.digest, 2, 3);
        _submit(s);
        assertEq(uint256(vm.load(address(safe), bytes32(uint256(0x5c7)))), 42, "delegatecall wrote the Safe");
        assertEq(token.balanceOf(alice), 1e18 + TOKEN_BUDGET * 5, "paid over budget");
        assertEq(token.allowance(address(safe), bob), 7, "approved");
        (,, uint256 spent,) = module.budget(address(token));
        assertEq(spent, 0, "tier 2 is not charged to the tier-1 budget");
    }

    function test_tier2_badRootSigner_reverts() public {
        Signed memory s = _signAt(_one(_pay(alice, 1)), 2);
        s.rootSig = _rootSig(0xDEAD, s.digest);
        vm.expectRevert(TreasuryModule.InvalidRootSignature.selector);
        _submit(s);
    }

    function test_tier2_highS_reverts() public {
        Signed memory s = _signAt(_one(_pay(alice, 1)), 2);
        (uint8 v, bytes32 r, bytes32 sv) = vm.sign(ROOT_PK, s.digest);
        assertLe(uint256(sv), HALF_N, "vm.sign is low-s");
        // the malleable twin (r, n - s, v ^ 1) recovers the same signer and must be refused
        s.rootSig = abi.encodePacked(r, bytes32(N - uint256(sv)), v == 27 ? uint8(28) : uint8(27));
        vm.expectRevert(TreasuryModule.InvalidRootSignature.selector);
        _submit(s);
    }

    function test_tier2_badV_reverts() public {
        Signed memory s = _signAt(_one(_pay(alice, 1)), 2);
        (uint8 v, bytes32 r, bytes32 sv) = vm.sign(ROOT_PK, s.digest);
        s.rootSig = abi.encodePacked(r, sv, v - 27); // 0/1 form refused
        vm.expectRevert(TreasuryModule.InvalidRootSignature.selector);
        _submit(s);
    }

    function test_tier2_badLength_reverts() public {
        Signed memory s = _signAt(_one(_pay(alice, 1)), 2);
        (, bytes32 r, bytes32 sv) = vm.sign(ROOT_PK, s.digest);
        s.rootSig = abi.encodePacked(r, sv); // 64 bytes (EIP-2098 not accepted)
        vm.expectRevert(TreasuryModule.InvalidRootSignature.selector);
        _submit(s);
    }

    function test_tier2_stillNeedsFrost() public {
        Signed memory s = _sign2(_one(_pay(alice, 1)));
        s.sig.z = addmod(s.sig.z, 1, N);
        vm.expectRevert(TreasuryModule.InvalidFrostSignature.selector);
        _submit(s);
    }

    // ───────────────────────────────────────────── pause

    function test_pauseByRoot_unpauseByRoot() public {
        _rootAdmin(module.PAUSE(), "");
        assertTrue(module.paused(), "paused");
        Signed memory s = _sign(_one(_pay(alice, 1)));
        vm.expectRevert(TreasuryModule.ModulePaused.selector);
        _submit(s);
        _rootAdmin(module.UNPAUSE(), "");
        assertFalse(module.paused(), "unpaused");
        _submit(s);
    }

    function test_pauseByQuorum_blocksTier2Too() public {
        SignedAdmin memory a = _byQuorum(module.PAUSE(), "");
        vm.expectEmit(address(module));
        emit Paused(address(module));
        _admin(a);
        assertTrue(module.paused(), "paused");
        Signed memory s = _sign2(_one(_pay(alice, 1)));
        vm.expectRevert(TreasuryModule.ModulePaused.selector);
        _submit(s);
    }

    function test_unpauseByQuorum_unauthorized() public {
        _admin(_byQuorum(module.PAUSE(), ""));
        SignedAdmin memory a = _byQuorum(module.UNPAUSE(), "");
        vm.expectRevert(TreasuryModule.Unauthorized.selector);
        _admin(a);
        assertTrue(module.paused(), "still paused");
    }

    function test_unpauseBySafe() public {
        _admin(_byQuorum(module.PAUSE(), ""));
        _configure(module.UNPAUSE(), "");
        assertFalse(module.paused(), "unpaused by the Safe");
    }

    // ───────────────────────────────────────────── admin authorisation

    function test_admin_quorumCannotChangeSettings() public {
        SignedAdmin memory a = _byQuorum(module.SET_BUDGET(), abi.encode(address(token), uint256(1), PERIOD));
        vm.expectRevert(TreasuryModule.Unauthorized.selector);
        _admin(a);
    }

    function test_admin_badRootSigFallsBackToUnauthorized() public {
        SignedAdmin memory a = _byRoot(module.SET_SPENDER_ALLOWED(), abi.encode(bob, false));
        a.rootSig = _rootSig(0xDEAD, module.adminDigest(a.op));
        vm.expectRevert(TreasuryModule.Unauthorized.selector);
        _admin(a);
    }

    function test_admin_badNonceAndExpiry() public {
        SignedAdmin memory a = _byRoot(module.PAUSE(), "");
        _admin(a);
        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.BadNonce.selector, 1, 0));
        _admin(a);
        SignedAdmin memory b = _byRoot(module.UNPAUSE(), "");
        vm.warp(b.op.deadline + 1);
        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.Expired.selector, b.op.deadline, b.op.deadline + 1));
        _admin(b);
    }

    function test_admin_unknownAction() public {
        SignedAdmin memory a = _byRoot(9, "");
        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.UnknownAction.selector, 9));
        _admin(a);
    }

    function test_configure_onlySafe() public {
        vm.expectRevert(TreasuryModule.NotSafe.selector);
        module.configure(0, "");
        vm.prank(rootAddr);
        vm.expectRevert(TreasuryModule.NotSafe.selector);
        module.configure(0, "");
    }

    // ───────────────────────────────────────────── timelock

    function test_timelock_widenQueuedThenApplied() public {
        Scribble sc = new Scribble();
        bytes memory params = abi.encode(address(sc), Scribble.scribble.selector, true);
        uint256 n = module.adminNonce();
        bytes32 id = _changeId(5, params, n);
        SignedAdmin memory a = _byRoot(5, params);
        vm.expectEmit(address(module));
        emit ChangeQueued(id, 5, params, block.timestamp + DELAY);
        _admin(a);
        assertFalse(module.isCallAllowed(address(sc), Scribble.scribble.selector), "not yet");
        assertEq(module.queuedChange(id), block.timestamp + DELAY, "eta");

        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.ChangeNotReady.selector, id, block.timestamp + DELAY));
        module.applyChange(5, params, n);

        vm.warp(block.timestamp + DELAY);
        vm.prank(address(0xCAFE)); // anyone
        module.applyChange(5, params, n);
        assertTrue(module.isCallAllowed(address(sc), Scribble.scribble.selector), "applied");
        assertEq(module.queuedChange(id), 0, "dequeued");

        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.ChangeNotQueued.selector, id));
        module.applyChange(5, params, n);
    }

    function test_timelock_applyWithWrongParams_notQueued() public {
        bytes memory params = abi.encode(bob, true);
        uint256 n = module.adminNonce();
        _rootAdmin(6, params);
        vm.warp(block.timestamp + DELAY);
        bytes memory other = abi.encode(alice, true);
        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.ChangeNotQueued.selector, _changeId(6, other, n)));
        module.applyChange(6, other, n);
    }

    function _queueSpender() internal returns (bytes memory params, uint256 n, bytes32 id) {
        params = abi.encode(bob, true);
        n = module.adminNonce();
        id = _changeId(6, params, n);
        _rootAdmin(6, params);
        assertEq(module.queuedChange(id), block.timestamp + DELAY, "queued");
    }

    function test_timelock_cancelByQuorum() public {
        (bytes memory params, uint256 n, bytes32 id) = _queueSpender();
        SignedAdmin memory a = _byQuorum(module.CANCEL(), abi.encode(id));
        vm.expectEmit(address(module));
        emit ChangeCancelled(id, address(module));
        _admin(a);
        vm.warp(block.timestamp + DELAY);
        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.ChangeNotQueued.selector, id));
        module.applyChange(6, params, n);
        assertFalse(module.isSpenderAllowed(bob), "never applied");
    }

    function test_timelock_cancelBySafe() public {
        (bytes memory params, uint256 n, bytes32 id) = _queueSpender();
        _configure(module.CANCEL(), abi.encode(id));
        assertEq(module.queuedChange(id), 0, "cancelled");
        vm.warp(block.timestamp + DELAY);
        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.ChangeNotQueued.selector, id));
        module.applyChange(6, params, n);
    }

    function test_timelock_cancelByRoot() public {
        (,, bytes32 id) = _queueSpender();
        _rootAdmin(module.CANCEL(), abi.encode(id));
        assertEq(module.queuedChange(id), 0, "cancelled");
    }

    function test_timelock_cancelUnknown_reverts() public {
        SignedAdmin memory a = _byQuorum(module.CANCEL(), abi.encode(bytes32(uint256(1))));
        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.ChangeNotQueued.selector, bytes32(uint256(1))));
        _admin(a);
    }

    function test_timelock_budgetRaiseQueued_lowerImmediate() public {
        _rootAdmin(4, abi.encode(address(token), TOKEN_BUDGET * 2, PERIOD));
        (uint256 limit,,,) = module.budget(address(token));
        assertEq(limit, TOKEN_BUDGET, "raise is queued");
        _rootAdmin(4, abi.encode(address(token), TOKEN_BUDGET / 2, PERIOD));
        (limit,,,) = module.budget(address(token));
        assertEq(limit, TOKEN_BUDGET / 2, "lower is immediate");
    }

    function test_timelock_budgetPeriodShorterQueued_longerImmediate() public {
        _rootAdmin(4, abi.encode(address(token), TOKEN_BUDGET, PERIOD / 2));
        (, uint64 period,,) = module.budget(address(token));
        assertEq(period, PERIOD, "shorter period is queued");
        _rootAdmin(4, abi.encode(address(token), TOKEN_BUDGET, PERIOD * 7));
        (, period,,) = module.budget(address(token));
        assertEq(period, PERIOD * 7, "longer period is immediate");
    }

    function test_budgetChange_keepsSpent() public {
        _exec(_one(_pay(alice, 600e18)));
        _rootAdmin(4, abi.encode(address(token), TOKEN_BUDGET, PERIOD * 7));
        (,, uint256 spent, uint256 remaining) = module.budget(address(token));
        assertEq(spent, 600e18, "spent carried over to the new period");
        assertEq(remaining, 400e18, "remaining");
    }

    function test_timelock_newTrackedAssetQueued() public {
        // tracking makes an asset spendable at tier 1: it widens, behind the timelock
        TestToken other = new TestToken("Other", "OTH", 6);
        bytes memory params = abi.encode(address(other), uint256(5e6), PERIOD);
        uint256 n = module.adminNonce();
        _rootAdmin(4, params);
        (uint256 limit,,,) = module.budget(address(other));
        assertEq(limit, 0, "queued");
        vm.warp(block.timestamp + DELAY);
        module.applyChange(4, params, n);
        (limit,,,) = module.budget(address(other));
        assertEq(limit, 5e6, "tracked after the timelock");
        assertEq(module.trackedAssets().length, 3, "tracked");
    }

    function test_timelock_removalsImmediate() public {
        _rootAdmin(5, abi.encode(address(token), TestToken.transfer.selector, false));
        assertFalse(module.isCallAllowed(address(token), TestToken.transfer.selector), "removed at once");
        _configure(6, abi.encode(bob, true));
        _rootAdmin(6, abi.encode(bob, false));
        assertFalse(module.isSpenderAllowed(bob), "spender removed at once");
    }

    function test_timelock_delayHigherImmediate_lowerQueued() public {
        _rootAdmin(7, abi.encode(uint64(DELAY * 2)));
        assertEq(module.timelockDelay(), DELAY * 2, "higher delay at once");
        uint256 n = module.adminNonce();
        bytes memory params = abi.encode(uint64(1 hours));
        _rootAdmin(7, params);
        assertEq(module.timelockDelay(), DELAY * 2, "lower delay queued");
        vm.warp(block.timestamp + DELAY * 2);
        module.applyChange(7, params, n);
        assertEq(module.timelockDelay(), 1 hours, "applied");
    }

    function test_timelock_rootRotationQueued() public {
        address newRoot = vm.addr(0x1234);
        uint256 n = module.adminNonce();
        bytes memory params = abi.encode(newRoot);
        _rootAdmin(3, params);
        assertEq(module.root(), rootAddr, "queued");
        vm.warp(block.timestamp + DELAY);
        module.applyChange(3, params, n);
        assertEq(module.root(), newRoot, "rotated");
    }

    function test_groupKeyRotation() public {
        FrostSigner.Key memory k2 = FrostSigner.key(vm, 0x5EC0DE);
        uint256 n = module.adminNonce();
        bytes memory params = abi.encode(k2.x, k2.parity);
        _rootAdmin(2, params);
        (uint256 x,) = module.groupKey();
        assertEq(x, group.x, "rotation queued");
        vm.warp(block.timestamp + DELAY);
        module.applyChange(2, params, n);
        (x,) = module.groupKey();
        assertEq(x, k2.x, "rotated");

        Signed memory s = _sign(_one(_pay(alice, 1)));
        vm.expectRevert(TreasuryModule.InvalidFrostSignature.selector);
        _submit(s); // old key refused
        s.sig = _frost(k2, s.digest);
        _submit(s);
    }

    // ───────────────────────────────────────────── group key validation

    function test_constructor_rejectsBadGroupKey() public {
        vm.expectRevert(TreasuryModule.InvalidGroupKey.selector);
        new TreasuryModule(address(safe), 0, 0, rootAddr, DELAY, multiSend);
        vm.expectRevert(TreasuryModule.InvalidGroupKey.selector);
        new TreasuryModule(address(safe), N, 0, rootAddr, DELAY, multiSend);
        vm.expectRevert(TreasuryModule.InvalidGroupKey.selector);
        new TreasuryModule(address(safe), N + 5, 0, rootAddr, DELAY, multiSend);
        vm.expectRevert(TreasuryModule.InvalidGroupKey.selector);
        new TreasuryModule(address(safe), group.x, 2, rootAddr, DELAY, multiSend);
        vm.expectRevert(TreasuryModule.InvalidGroupKey.selector);
        new TreasuryModule(address(safe), 5, 0, rootAddr, DELAY, multiSend); // not on the curve
    }

    function test_setGroupKey_rejectsBadKey() public {
        bytes memory data = abi.encodeCall(TreasuryModule.configure, (2, abi.encode(uint256(5), uint8(0))));
        bytes32 h = safe.getTransactionHash(address(module), 0, data, 0, 0, 0, 0, address(0), address(0), safe.nonce());
        bytes memory sigs;
        for (uint256 i; i < 2; ++i) {
            (uint8 v, bytes32 r, bytes32 s) = vm.sign(ownerPks[i], h);
            sigs = bytes.concat(sigs, abi.encodePacked(r, s, v));
        }
        // safeTxGas = 0 and gasPrice = 0: Safe 1.5.0 bubbles the inner revert
        vm.expectRevert(TreasuryModule.InvalidGroupKey.selector);
        safe.execTransaction(address(module), 0, data, 0, 0, 0, 0, address(0), payable(address(0)), sigs);
    }

    function test_setBudget_rejectsZeroPeriodAndHugeLimit() public {
        vm.prank(address(safe));
        vm.expectRevert(TreasuryModule.InvalidParams.selector);
        module.configure(4, abi.encode(address(token), uint256(1), uint64(0)));
        vm.prank(address(safe));
        vm.expectRevert(TreasuryModule.InvalidParams.selector);
        module.configure(4, abi.encode(address(token), uint256(1) << 128, uint64(1)));
    }

    // ───────────────────────────────────────────── reentrancy

    function test_reentrantExec_reverts() public {
        Reenter re = new Reenter(module);
        _configure(module.SET_CALL_ALLOWED(), abi.encode(address(re), Reenter.go.selector, true));
        // the inner operation is validly signed for nonce 1; the lock refuses it mid-batch
        TreasuryModule.Call[] memory inner = _one(_pay(alice, 1));
        uint256 deadline = block.timestamp + 1 hours;
        TreasuryModule.FrostSig memory innerSig = _frost(group, module.operationDigest(inner, 1, deadline, 1));
        re.arm(inner, deadline, innerSig);
        Signed memory s = _sign(_one(_c(address(re), 0, abi.encodeCall(Reenter.go, ()))));
        bytes memory reason = abi.encodeWithSelector(TreasuryModule.Reentrancy.selector);
        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.CallFailed.selector, 0, reason));
        _submit(s);
    }
}

/// @notice Calls back into the module's exec during a batch.
contract Reenter {
    TreasuryModule immutable module;
    TreasuryModule.Call[] calls;
    uint256 deadline;
    TreasuryModule.FrostSig sig;

    constructor(TreasuryModule m) {
        module = m;
    }

    function arm(TreasuryModule.Call[] memory c, uint256 d, TreasuryModule.FrostSig memory s) external {
        delete calls;
        for (uint256 i; i < c.length; ++i) {
            calls.push(c[i]);
        }
        deadline = d;
        sig = s;
    }

    function go() external {
        module.exec(calls, 1, deadline, sig, "");
    }
}
