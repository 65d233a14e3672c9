// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {Test, Vm} from "./lib/Test.sol";
import {ModuleFixture, ISafe} from "./lib/ModuleFixture.sol";
import {TreasuryModule} from "../contracts/TreasuryModule.sol";
import {TestToken} from "../contracts/TestToken.sol";

/// @notice Pulls approved tokens from its caller, like a DEX router.
contract MockRouter {
    function swap(TestToken sold, uint256 amount) external {
        sold.transferFrom(msg.sender, address(this), amount);
    }
}

/// @notice A tracked ERC-20 whose `deposit` pulls another token from the caller (a vault share):
///         a call to a tracked token that is not transfer/approve can move another asset.
contract MockVault is TestToken {
    TestToken immutable underlying;

    constructor(TestToken u) TestToken("Vault share", "VS", 18) {
        underlying = u;
    }

    function deposit(uint256 amount) external {
        underlying.transferFrom(msg.sender, address(this), amount);
    }
}

/// @notice A tracked asset whose `balanceOf` starts reverting once tracked: shows which assets a
///         call measures.
contract Unmeasurable {
    bool public broken;

    function breakIt() external {
        broken = true;
    }

    function balanceOf(address) external view returns (uint256) {
        if (broken) revert("measured");
        return 0;
    }
}

/// @notice A payable contract (ETH to a contract needs an allow-list entry).
contract Sink {
    receive() external payable {}
}

/// @notice Which assets a tier-1 call measures, and the single Safe entry for tier-2 batches
///         (MultiSendCallOnly).
contract GasPathsTest is ModuleFixture {
    event ExecutionFromModuleSuccess(address indexed module);

    bytes32 constant MODULE_SUCCESS = keccak256("ExecutionFromModuleSuccess(address)");

    MockRouter router;
    Unmeasurable unm;

    function setUp() public override {
        super.setUp();
        router = new MockRouter();
        _configure(module.SET_CALL_ALLOWED(), abi.encode(address(router), MockRouter.swap.selector, true));
        _configure(module.SET_SPENDER_ALLOWED(), abi.encode(address(router), true));
        unm = new Unmeasurable();
        // tracked: from here on, any call that measures UNM reverts with BalanceQueryFailed
        _configure(module.SET_BUDGET(), abi.encode(address(unm), TOKEN_BUDGET, PERIOD));
        unm.breakIt();
    }

    function _spent(address asset) internal view returns (uint256 spent) {
        (,, spent,) = module.budget(asset);
    }

    function _approve(address spender, uint256 amount) internal view returns (TreasuryModule.Call memory) {
        return _c(address(token), 0, abi.encodeCall(TestToken.approve, (spender, amount)));
    }

    function _swap(uint256 amount) internal view returns (TreasuryModule.Call memory) {
        return _c(address(router), 0, abi.encodeCall(MockRouter.swap, (token, amount)));
    }

    function _two(TreasuryModule.Call memory a, TreasuryModule.Call memory b)
        internal
        pure
        returns (TreasuryModule.Call[] memory cs)
    {
        cs = new TreasuryModule.Call[](2);
        cs[0] = a;
        cs[1] = b;
    }

    function _moduleEntries(Vm.Log[] memory logs) internal view returns (uint256 n) {
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].emitter == address(safe) && logs[i].topics[0] == MODULE_SUCCESS) ++n;
        }
    }

    // ───────────────────────────────────────────── selective measurement

    function test_selective_tokenPaymentMeasuresOnlyThatToken() public {
        // UNM's balanceOf reverts: a payment of TUSD does not measure it (nor ETH)
        _exec(_one(_pay(alice, 5e18)));
        assertEq(_spent(address(token)), 5e18, "token charged");
        _exec(_two(_pay(alice, 1e18), _pay(bob, 2e18)));
        assertEq(_spent(address(token)), 8e18, "batch charged");
    }

    function test_selective_ethToEoaMeasuresEthOnly() public {
        _exec(_two(_pay(alice, 1e18), _c(bob, 1 ether, "")));
        assertEq(_spent(address(0)), 1 ether, "eth charged");
        assertEq(_spent(address(token)), 1e18, "token charged");
    }

    function test_selective_ethValueToEoaStillBudgeted() public {
        Signed memory s = _sign(_two(_pay(alice, 1e18), _c(bob, ETH_BUDGET + 1, "")));
        vm.expectRevert(
            abi.encodeWithSelector(TreasuryModule.BudgetExceeded.selector, address(0), ETH_BUDGET + 1, ETH_BUDGET)
        );
        _submit(s);
    }

    function test_selective_approveAloneMeasuresThatToken() public {
        _exec(_one(_approve(address(router), 7e18)));
        assertEq(token.allowance(address(safe), address(router)), 7e18, "approved");
    }

    function test_conservative_routerCallMeasuresEverything() public {
        // any call to a non-token contract measures every tracked asset: UNM's revert shows it
        Signed memory s = _sign(_two(_approve(address(router), 7e18), _swap(7e18)));
        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.BalanceQueryFailed.selector, address(unm)));
        _submit(s);
    }

    function test_conservative_ethValueToContractMeasuresEverything() public {
        Sink sink = new Sink();
        _configure(module.SET_CALL_ALLOWED(), abi.encode(address(sink), bytes4(0), true));
        Signed memory s = _sign(_one(_c(address(sink), 1 ether, "")));
        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.BalanceQueryFailed.selector, address(unm)));
        _submit(s);
    }

    function test_untrackedTokenTransferRefusedEvenIfAllowListed() public {
        TestToken other = new TestToken("Other", "OTH", 18);
        other.mint(address(safe), 10e18);
        _configure(module.SET_CALL_ALLOWED(), abi.encode(address(other), TestToken.transfer.selector, true));
        Signed memory s = _sign(_one(_c(address(other), 0, abi.encodeCall(TestToken.transfer, (alice, 1e18)))));
        vm.expectRevert(
            abi.encodeWithSelector(TreasuryModule.CallNotAllowed.selector, 0, address(other), TestToken.transfer.selector)
        );
        _submit(s);
    }

    function test_safeUntracksABrokenAsset_unbricks() public {
        Signed memory s = _sign(_two(_approve(address(router), 7e18), _swap(7e18)));
        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.BalanceQueryFailed.selector, address(unm)));
        _submit(s);
        _configure(module.SET_BUDGET(), abi.encode(address(unm), uint256(0), uint64(0)));
        _exec(_two(_approve(address(router), 7e18), _swap(7e18)));
        assertEq(_spent(address(token)), 7e18, "swap charged once the broken asset is untracked");
    }

    // ───────────────────────────────────────────── transfer allow-list bit mirrored in the budget slot

    function test_transferBit_followsAllowList() public {
        _configure(module.SET_CALL_ALLOWED(), abi.encode(address(token), TestToken.transfer.selector, false));
        assertFalse(module.isCallAllowed(address(token), TestToken.transfer.selector), "view");
        Signed memory s = _sign(_one(_pay(alice, 1e18)));
        vm.expectRevert(
            abi.encodeWithSelector(
                TreasuryModule.CallNotAllowed.selector, 0, address(token), TestToken.transfer.selector
            )
        );
        _submit(s);
        _configure(module.SET_CALL_ALLOWED(), abi.encode(address(token), TestToken.transfer.selector, true));
        _exec(_one(_pay(alice, 1e18)));
        assertEq(_spent(address(token)), 1e18, "allowed again");
    }

    function test_transferBit_copiedWhenTrackingStarts() public {
        TestToken late = new TestToken("Late", "LATE", 18);
        late.mint(address(safe), 10e18);
        _configure(module.SET_CALL_ALLOWED(), abi.encode(address(late), TestToken.transfer.selector, true));
        _configure(module.SET_BUDGET(), abi.encode(address(late), 3e18, PERIOD));
        _exec(_one(_c(address(late), 0, abi.encodeCall(TestToken.transfer, (alice, 2e18)))));
        assertEq(_spent(address(late)), 2e18, "tracked and charged");
        // the budget change keeps the bit
        _configure(module.SET_BUDGET(), abi.encode(address(late), 5e18, PERIOD));
        _exec(_one(_c(address(late), 0, abi.encodeCall(TestToken.transfer, (alice, 3e18)))));
        assertEq(_spent(address(late)), 5e18, "still allowed, spent carried");
        Signed memory s = _sign(_one(_c(address(late), 0, abi.encodeCall(TestToken.transfer, (alice, 1)))));
        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.BudgetExceeded.selector, address(late), 1, 0));
        _submit(s);
    }

    function test_transferBit_notTrackedNotAllowedByOtherSelector() public {
        TestToken late = new TestToken("Late", "LATE", 18);
        _configure(module.SET_BUDGET(), abi.encode(address(late), 3e18, PERIOD)); // tracked, not allow-listed
        Signed memory s = _sign(_one(_c(address(late), 0, abi.encodeCall(TestToken.transfer, (alice, 1)))));
        vm.expectRevert(
            abi.encodeWithSelector(TreasuryModule.CallNotAllowed.selector, 0, address(late), TestToken.transfer.selector)
        );
        _submit(s);
    }

    // ───────────────────────────────────────────── one Safe entry per batch

    function test_batch_tier1OneEntryPerCall() public {
        vm.recordLogs();
        _exec(_two(_pay(alice, 1e18), _pay(bob, 2e18)));
        assertEq(_moduleEntries(vm.getRecordedLogs()), 2, "tier 1: one measured Safe entry per call");
    }

    function test_batch_oneSafeEntry() public {
        vm.recordLogs();
        _submit(_sign2(_two(_pay(alice, 1e18), _pay(bob, 2e18))));
        assertEq(_moduleEntries(vm.getRecordedLogs()), 1, "one Safe entry");
        assertEq(token.balanceOf(alice), 2e18, "alice");
        assertEq(token.balanceOf(bob), 3e18, "bob");
    }

    function test_batch_singleCallUsesOneEntry() public {
        vm.recordLogs();
        _exec(_one(_pay(alice, 1e18)));
        assertEq(_moduleEntries(vm.getRecordedLogs()), 1, "one Safe entry");
    }

    function test_batch_failureKeepsIndexAndReason() public {
        TreasuryModule.Call[] memory calls = new TreasuryModule.Call[](3);
        calls[0] = _pay(alice, 1e18);
        calls[1] = _pay(bob, 2_000_000e18);
        calls[2] = _pay(alice, 1e18);
        Signed memory s = _sign2(calls);
        bytes memory reason = abi.encodeWithSelector(
            TestToken.InsufficientBalance.selector, address(safe), 1_000_000e18 - 1e18, 2_000_000e18
        );
        vm.expectRevert(abi.encodeWithSelector(TreasuryModule.CallFailed.selector, 1, reason));
        _submit(s);
        assertEq(token.balanceOf(alice), 1e18, "nothing executed");
    }

    function test_batch_zeroTargetFallsBackToPerCall() public {
        // MultiSendCallOnly turns `to == address(0)` into the Safe itself: such batches go per call
        vm.recordLogs();
        _submit(_sign2(_two(_pay(alice, 1e18), _c(address(0), 0, ""))));
        assertEq(_moduleEntries(vm.getRecordedLogs()), 2, "per-call entries");
        assertEq(token.balanceOf(alice), 2e18, "paid");
    }

    function test_batch_tier2DelegatecallFallsBackToPerCall() public {
        TreasuryModule.Call[] memory calls = _two(_pay(alice, 1e18), _pay(bob, 1e18));
        // a DELEGATECALL (tier 2 only) is never batched
        calls[1] = TreasuryModule.Call(address(new Noop()), 0, abi.encodeCall(Noop.noop, ()), 1);
        vm.recordLogs();
        _submit(_sign2(calls));
        assertEq(_moduleEntries(vm.getRecordedLogs()), 2, "per-call entries");
    }

    function test_batch_tier2PlainCallsBatched() public {
        vm.recordLogs();
        _submit(_sign2(_two(_pay(alice, 1e18), _pay(bob, 1e18))));
        assertEq(_moduleEntries(vm.getRecordedLogs()), 1, "one Safe entry");
    }

    function test_batch_disabledWithoutMultiSend() public {
        TreasuryModule m2 = new TreasuryModule(address(safe), group.x, group.parity, rootAddr, DELAY, address(0));
        assertEq(m2.multiSendCallOnly(), address(0), "disabled");
        _safeExec(address(safe), abi.encodeCall(ISafe.enableModule, (address(m2))));
        module = m2;
        _configure(module.SET_CALL_ALLOWED(), abi.encode(address(token), TestToken.transfer.selector, true));
        vm.recordLogs();
        _submit(_sign2(_two(_pay(alice, 1e18), _pay(bob, 1e18))));
        assertEq(_moduleEntries(vm.getRecordedLogs()), 2, "per-call entries");
    }

    function test_constructor_rejectsMultiSendWithoutCode() public {
        vm.expectRevert(TreasuryModule.InvalidParams.selector);
        new TreasuryModule(address(safe), group.x, group.parity, rootAddr, DELAY, address(0xdead));
    }

    function test_batch_moduleGuardRefusingDelegatecall_fallsBack() public {
        // A batch entry the Safe refuses (e.g. a module guard that forbids DELEGATECALL; mocked
        // here) changed nothing: the calls are replayed one entry each, executed and charged once.
        vm.mockCallRevert(
            address(safe),
            abi.encodeWithSelector(bytes4(keccak256("execTransactionFromModule(address,uint256,bytes,uint8)")), multiSend),
            "guard: no delegatecall"
        );
        vm.recordLogs();
        _submit(_sign2(_two(_pay(alice, 1e18), _pay(bob, 1e18))));
        assertEq(_moduleEntries(vm.getRecordedLogs()), 2, "replayed per call");
        assertEq(token.balanceOf(bob), 2e18, "paid once");
    }

    // ───────────────────────────────────────────── malformed calldata

    function test_dirtyAddress_reverts() public {
        TreasuryModule.Call[] memory calls = _one(_pay(alice, 1e18));
        uint256 nonce = module.nonce();
        uint256 deadline = block.timestamp + 1 hours;
        // operationDigest(calls, nonce, deadline, tier): 4 head words, then calls: length, offset[0], Call.to
        bytes memory dcd = abi.encodeCall(TreasuryModule.operationDigest, (calls, nonce, deadline, uint8(1)));
        uint256 dPos = 4 + 4 * 32 + 32 + 32;
        assertEq(uint8(dcd[dPos + 12]), uint8(uint160(address(token)) >> 152), "located `to` (digest)");
        dcd[dPos] = 0x01; // dirty upper bits
        (bool ok, bytes memory ret) = address(module).staticcall(dcd);
        assertTrue(ok, "the digest walk reads the raw word");
        bytes32 digest = abi.decode(ret, (bytes32));
        // exec with a valid signature over that (dirty) digest: refused before any call
        TreasuryModule.FrostSig memory sig = _frost(group, digest);
        bytes memory cd = abi.encodeCall(TreasuryModule.exec, (calls, nonce, deadline, sig, ""));
        uint256 toPos = 4 + 7 * 32 + 32 + 32; // 7 head words, then as above (rootSig comes last)
        assertEq(uint8(cd[toPos + 12]), uint8(uint160(address(token)) >> 152), "located `to` (exec)");
        cd[toPos] = 0x01;
        (ok, ret) = address(module).call(cd);
        assertFalse(ok, "dirty address refused");
        assertEq(ret.length, 0, "refused by the calldata check, not by the signature");
        assertEq(module.nonce(), nonce, "nothing executed");
        assertEq(token.balanceOf(alice), 1e18, "nothing paid");
    }
}

contract Noop {
    function noop() external {}
}

/// @notice The conservative cases that must still charge, on the plain fixture.
contract GasPathsChargeTest is ModuleFixture {
    MockRouter router;

    function setUp() public override {
        super.setUp();
        router = new MockRouter();
        _configure(module.SET_CALL_ALLOWED(), abi.encode(address(router), MockRouter.swap.selector, true));
        _configure(module.SET_SPENDER_ALLOWED(), abi.encode(address(router), true));
    }

    function _spent(address asset) internal view returns (uint256 spent) {
        (,, spent,) = module.budget(asset);
    }

    function test_conservative_routerSwapChargesSoldToken() public {
        TreasuryModule.Call[] memory calls = new TreasuryModule.Call[](2);
        calls[0] = _c(address(token), 0, abi.encodeCall(TestToken.approve, (address(router), 7e18)));
        calls[1] = _c(address(router), 0, abi.encodeCall(MockRouter.swap, (token, 7e18)));
        _exec(calls);
        assertEq(_spent(address(token)), 7e18, "sold token charged");
        assertEq(token.balanceOf(address(router)), 7e18, "swapped");
    }

    function test_conservative_routerSwapOverBudgetReverts() public {
        TreasuryModule.Call[] memory calls = new TreasuryModule.Call[](2);
        calls[0] = _c(address(token), 0, abi.encodeCall(TestToken.approve, (address(router), TOKEN_BUDGET + 1)));
        calls[1] = _c(address(router), 0, abi.encodeCall(MockRouter.swap, (token, TOKEN_BUDGET + 1)));
        Signed memory s = _sign(calls);
        vm.expectRevert(
            abi.encodeWithSelector(TreasuryModule.BudgetExceeded.selector, address(token), TOKEN_BUDGET + 1, TOKEN_BUDGET)
        );
        _submit(s);
    }

    function test_conservative_standingApprovalPullCharged() public {
        _exec(_one(_c(address(token), 0, abi.encodeCall(TestToken.approve, (address(router), 9e18)))));
        assertEq(_spent(address(token)), 0, "approval moves nothing");
        _exec(_one(_c(address(router), 0, abi.encodeCall(MockRouter.swap, (token, 9e18)))));
        assertEq(_spent(address(token)), 9e18, "pulled through a standing approval, charged");
    }

    function test_conservative_vaultDepositChargesUnderlying() public {
        MockVault vault = new MockVault(token);
        _configure(module.SET_BUDGET(), abi.encode(address(vault), TOKEN_BUDGET, PERIOD)); // tracked too
        _configure(module.SET_CALL_ALLOWED(), abi.encode(address(vault), MockVault.deposit.selector, true));
        _configure(module.SET_SPENDER_ALLOWED(), abi.encode(address(vault), true));
        TreasuryModule.Call[] memory calls = new TreasuryModule.Call[](2);
        calls[0] = _c(address(token), 0, abi.encodeCall(TestToken.approve, (address(vault), 4e18)));
        calls[1] = _c(address(vault), 0, abi.encodeCall(MockVault.deposit, (4e18)));
        _exec(calls);
        assertEq(_spent(address(token)), 4e18, "a non-transfer call to a tracked token charges what it pulls");
    }

    function test_conservative_ethValueCallCharged() public {
        Sink sink = new Sink();
        _configure(module.SET_CALL_ALLOWED(), abi.encode(address(sink), bytes4(0), true));
        _exec(_one(_c(address(sink), 2 ether, "")));
        assertEq(_spent(address(0)), 2 ether, "eth to a contract charged");
        _exec(_two(_pay(alice, 1e18), _c(bob, 1 ether, "")));
        assertEq(_spent(address(0)), 3 ether, "eth to an EOA charged");
    }

    function _two(TreasuryModule.Call memory a, TreasuryModule.Call memory b)
        internal
        pure
        returns (TreasuryModule.Call[] memory cs)
    {
        cs = new TreasuryModule.Call[](2);
        cs[0] = a;
        cs[1] = b;
    }
}
