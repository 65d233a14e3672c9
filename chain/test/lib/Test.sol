// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

/// @notice The forge cheatcodes these tests use (declared here so no forge-std is needed).
interface Vm {
    struct Wallet {
        address addr;
        uint256 publicKeyX;
        uint256 publicKeyY;
        uint256 privateKey;
    }

    struct Log {
        bytes32[] topics;
        bytes data;
        address emitter;
    }

    function warp(uint256 newTimestamp) external;
    function load(address target, bytes32 slot) external view returns (bytes32);
    function prank(address sender) external;
    function deal(address account, uint256 newBalance) external;
    function expectRevert() external;
    function expectRevert(bytes4 revertData) external;
    function expectRevert(bytes calldata revertData) external;
    function sign(uint256 privateKey, bytes32 digest) external pure returns (uint8 v, bytes32 r, bytes32 s);
    function addr(uint256 privateKey) external pure returns (address);
    function createWallet(uint256 privateKey) external returns (Wallet memory);
    function readFile(string calldata path) external view returns (string memory);
    function isFile(string calldata path) external view returns (bool);
    function projectRoot() external view returns (string memory);
    function split(string calldata input, string calldata delimiter) external pure returns (string[] memory);
    function parseJsonUint(string calldata json, string calldata key) external pure returns (uint256);
    function parseJsonBytes(string calldata json, string calldata key) external pure returns (bytes memory);
    function parseJsonString(string calldata json, string calldata key) external pure returns (string memory);
    function parseBytes(string calldata stringifiedValue) external pure returns (bytes memory);
    function parseJsonBytes32(string calldata json, string calldata key) external pure returns (bytes32);
    function eip712HashTypedData(string calldata jsonData) external pure returns (bytes32);
    function toString(uint256 value) external pure returns (string memory);
    function toString(address value) external pure returns (string memory);
    function toString(bytes32 value) external pure returns (string memory);
    function toString(bytes calldata value) external pure returns (string memory);
    function chainId(uint256 newChainId) external;
    function expectEmit() external;
    function expectEmit(address emitter) external;
    function assume(bool condition) external pure;
    function recordLogs() external;
    function getRecordedLogs() external returns (Log[] memory);
    function mockCallRevert(address callee, bytes calldata data, bytes calldata revertData) external;
}

/// @notice console.log for the subset used here (forge decodes calls to this address).
library console {
    address private constant CONSOLE = 0x000000000000000000636F6e736F6c652e6c6f67;

    function log(string memory s, uint256 v) internal view {
        (bool ok,) = CONSOLE.staticcall(abi.encodeWithSignature("log(string,uint256)", s, v));
        ok;
    }

    function log(string memory s) internal view {
        (bool ok,) = CONSOLE.staticcall(abi.encodeWithSignature("log(string)", s));
        ok;
    }
}

/// @notice A minimal test base: the cheatcode handle and assertions that revert with a message.
abstract contract Test {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    /// @dev forge reads this flag to know the contract holds tests.
    bool public IS_TEST = true;

    function fail(string memory why) internal pure {
        revert(why);
    }

    function assertTrue(bool c, string memory why) internal pure {
        if (!c) revert(string.concat("assertTrue failed: ", why));
    }

    function assertFalse(bool c, string memory why) internal pure {
        if (c) revert(string.concat("assertFalse failed: ", why));
    }

    function assertEq(uint256 a, uint256 b, string memory why) internal pure {
        if (a != b) {
            revert(string.concat("assertEq failed: ", why, ": ", vm.toString(a), " != ", vm.toString(b)));
        }
    }

    function assertEq(bytes32 a, bytes32 b, string memory why) internal pure {
        if (a != b) {
            revert(string.concat("assertEq failed: ", why, ": ", vm.toString(a), " != ", vm.toString(b)));
        }
    }

    function assertEq(address a, address b, string memory why) internal pure {
        if (a != b) {
            revert(string.concat("assertEq failed: ", why, ": ", vm.toString(a), " != ", vm.toString(b)));
        }
    }

    function assertLe(uint256 a, uint256 b, string memory why) internal pure {
        if (a > b) revert(string.concat("assertLe failed: ", why, ": ", vm.toString(a), " > ", vm.toString(b)));
    }

    function assertGe(uint256 a, uint256 b, string memory why) internal pure {
        if (a < b) revert(string.concat("assertGe failed: ", why, ": ", vm.toString(a), " < ", vm.toString(b)));
    }

    function assertGt(uint256 a, uint256 b, string memory why) internal pure {
        if (a <= b) revert(string.concat("assertGt failed: ", why, ": ", vm.toString(a), " <= ", vm.toString(b)));
    }

    /// @dev forge invariant tests: the contracts whose functions the fuzzer calls.
    address[] private _targetContracts;

    function targetContract(address a) internal {
        _targetContracts.push(a);
    }

    function targetContracts() public view returns (address[] memory) {
        return _targetContracts;
    }
}
