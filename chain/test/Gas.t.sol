// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {console} from "./lib/Test.sol";
import {ModuleFixture} from "./lib/ModuleFixture.sol";
import {TreasuryModule} from "../contracts/TreasuryModule.sol";
import {TestToken} from "../contracts/TestToken.sol";

/// @notice Gas of tier-1 payments through `exec` (three tracked assets: ETH, the token and GOV).
/// @dev Run with `--isolate` (scripts/forge-test.sh does) so each top-level call is a transaction
///      and the gas report shows total transaction gas (intrinsic + calldata + execution).
///      Recipients already hold tokens; the first payment of the period has already happened
///      (budget slot written), as in steady-state operation.
contract GasTest is ModuleFixture {
    TestToken gov;

    function setUp() public override {
        super.setUp();
        // As in the Rust gas-bench fixture: a second tracked ERC-20 the payments do not touch.
        gov = new TestToken("Test GOV", "GOV", 18);
        gov.mint(address(safe), 1_000_000e18);
        _configure(module.SET_BUDGET(), abi.encode(address(gov), TOKEN_BUDGET, PERIOD));
        for (uint256 i; i < 10; ++i) {
            token.mint(_recipient(i), 1e18); // recipients already hold tokens
        }
        _exec(_one(_pay(alice, 1e18))); // warm-up: the period's budget slot already written
    }

    function _recipient(uint256 i) internal pure returns (address) {
        return address(uint160(0x4100 + i));
    }

    function test_gas_onePayment() public {
        Signed memory s = _sign(_one(_pay(bob, 10e18)));
        uint256 g = gasleft();
        _submit(s);
        g -= gasleft();
        console.log("exec, 1 ERC-20 payment, execution gas seen by the caller", g);
        console.log("calldata bytes", _calldata(s).length);
        console.log("intrinsic gas (21000 + calldata)", _intrinsic(_calldata(s)));
    }

    function test_gas_tenPayments() public {
        TreasuryModule.Call[] memory calls = new TreasuryModule.Call[](10);
        for (uint256 i; i < 10; ++i) {
            calls[i] = _pay(_recipient(i), 1e18 + i);
        }
        Signed memory s = _sign(calls);
        uint256 g = gasleft();
        _submit(s);
        g -= gasleft();
        console.log("exec, 10 ERC-20 payments to 10 recipients, execution gas seen by the caller", g);
        console.log("intrinsic gas (21000 + calldata)", _intrinsic(_calldata(s)));
    }

    function _calldata(Signed memory s) internal pure returns (bytes memory) {
        return abi.encodeCall(TreasuryModule.exec, (s.calls, s.nonce, s.deadline, s.sig, s.rootSig));
    }

    function _intrinsic(bytes memory data) internal pure returns (uint256 g) {
        g = 21000;
        for (uint256 i; i < data.length; ++i) {
            g += data[i] == 0 ? 4 : 16;
        }
    }
}
