// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

import {Test, Vm} from "./Test.sol";
import {FrostSigner} from "./FrostSigner.sol";
import {TreasuryModule} from "../../contracts/TreasuryModule.sol";
import {TestToken} from "../../contracts/TestToken.sol";

/// @notice The Safe 1.5.0 functions the tests call.
interface ISafe {
    function setup(
        address[] calldata owners,
        uint256 threshold,
        address to,
        bytes calldata data,
        address fallbackHandler,
        address paymentToken,
        uint256 payment,
        address payable paymentReceiver
    ) external;
    function execTransaction(
        address to,
        uint256 value,
        bytes calldata data,
        uint8 operation,
        uint256 safeTxGas,
        uint256 baseGas,
        uint256 gasPrice,
        address gasToken,
        address payable refundReceiver,
        bytes calldata signatures
    ) external payable returns (bool);
    function getTransactionHash(
        address to,
        uint256 value,
        bytes calldata data,
        uint8 operation,
        uint256 safeTxGas,
        uint256 baseGas,
        uint256 gasPrice,
        address gasToken,
        address refundReceiver,
        uint256 nonce
    ) external view returns (bytes32);
    function nonce() external view returns (uint256);
    function enableModule(address module) external;
    function isModuleEnabled(address module) external view returns (bool);
    function getOwners() external view returns (address[] memory);
}

interface ISafeProxyFactory {
    function createProxyWithNonce(address singleton, bytes calldata initializer, uint256 saltNonce)
        external
        returns (address proxy);
}

/// @notice Writes to storage when called; a DELEGATECALL from the Safe would write the Safe's slot.
contract Scribble {
    function scribble(uint256 v) external {
        assembly {
            sstore(0x5c7, v)
        }
    }
}

/// @notice A real Safe 1.5.0 (npm artifacts) with 2-of-3 owners, the treasury module enabled through a
///         signed Safe transaction, a test token, and helpers to sign module operations.
abstract contract ModuleFixture is Test {
    string constant SAFE_ARTIFACTS = "/../.tools/node_modules/@safe-global/safe-smart-account/build/artifacts/contracts";

    uint256 constant ROOT_PK = 0xB0B;
    uint256 constant GROUP_SECRET = 0xF205;
    uint64 constant DELAY = 48 hours;
    uint256 constant HALF_N = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0;
    uint256 constant N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141;

    uint256[] ownerPks;
    ISafe safe;
    TreasuryModule module;
    TestToken token;
    address multiSend;
    FrostSigner.Key group;
    address rootAddr;
    address alice = address(0xA11CE);
    address bob = address(0xB0B0);

    uint256 constant TOKEN_BUDGET = 1_000e18;
    uint256 constant ETH_BUDGET = 10 ether;
    uint64 constant PERIOD = 1 days;

    struct Signed {
        TreasuryModule.Call[] calls;
        uint256 nonce;
        uint256 deadline;
        TreasuryModule.FrostSig sig;
        bytes rootSig;
        bytes32 digest;
    }

    function setUp() public virtual {
        vm.warp(1_700_000_000);
        rootAddr = vm.addr(ROOT_PK);
        group = FrostSigner.key(vm, GROUP_SECRET);
        safe = _deploySafe();
        multiSend = _deployArtifact(
            string.concat(vm.projectRoot(), SAFE_ARTIFACTS, "/libraries/MultiSendCallOnly.sol/MultiSendCallOnly.json")
        );
        module = new TreasuryModule(address(safe), group.x, group.parity, rootAddr, DELAY, multiSend);
        _safeExec(address(safe), abi.encodeCall(ISafe.enableModule, (address(module))));
        assertTrue(safe.isModuleEnabled(address(module)), "module enabled");

        token = new TestToken("Test USD", "TUSD", 18);
        token.mint(address(safe), 1_000_000e18);
        token.mint(alice, 1e18); // recipients already hold tokens (warm, non-zero balance slot)
        token.mint(bob, 1e18);
        vm.deal(address(safe), 100 ether);

        _configure(module.SET_BUDGET(), abi.encode(address(0), ETH_BUDGET, PERIOD));
        _configure(module.SET_BUDGET(), abi.encode(address(token), TOKEN_BUDGET, PERIOD));
        _configure(module.SET_CALL_ALLOWED(), abi.encode(address(token), TestToken.transfer.selector, true));
    }

    // ── Safe

    function _deploySafe() internal returns (ISafe) {
        string memory base = string.concat(vm.projectRoot(), SAFE_ARTIFACTS);
        address singleton = _deployArtifact(string.concat(base, "/Safe.sol/Safe.json"));
        address factory = _deployArtifact(string.concat(base, "/proxies/SafeProxyFactory.sol/SafeProxyFactory.json"));
        for (uint256 i = 1; i <= 3; ++i) {
            ownerPks.push(0xA000 + i);
        }
        // Safe requires owner signatures sorted by address.
        for (uint256 i; i < 3; ++i) {
            for (uint256 j = i + 1; j < 3; ++j) {
                if (vm.addr(ownerPks[j]) < vm.addr(ownerPks[i])) {
                    (ownerPks[i], ownerPks[j]) = (ownerPks[j], ownerPks[i]);
                }
            }
        }
        address[] memory owners = new address[](3);
        for (uint256 i; i < 3; ++i) {
            owners[i] = vm.addr(ownerPks[i]);
        }
        bytes memory init =
            abi.encodeCall(ISafe.setup, (owners, 2, address(0), "", address(0), address(0), 0, payable(address(0))));
        return ISafe(ISafeProxyFactory(factory).createProxyWithNonce(singleton, init, 0));
    }

    function _deployArtifact(string memory path) internal returns (address a) {
        bytes memory code = vm.parseJsonBytes(vm.readFile(path), ".bytecode");
        assembly {
            a := create(0, add(code, 0x20), mload(code))
        }
        assertTrue(a != address(0), string.concat("deploy failed: ", path));
    }

    /// @dev A Safe transaction signed by two owners (ascending addresses).
    function _safeExec(address to, bytes memory data) internal {
        bytes32 h = safe.getTransactionHash(to, 0, data, 0, 0, 0, 0, address(0), address(0), safe.nonce());
        bytes memory sigs;
        for (uint256 i; i < 2; ++i) {
            (uint8 v, bytes32 r, bytes32 s) = vm.sign(ownerPks[i], h);
            sigs = bytes.concat(sigs, abi.encodePacked(r, s, v));
        }
        assertTrue(
            safe.execTransaction(to, 0, data, 0, 0, 0, 0, address(0), payable(address(0)), sigs), "safe tx failed"
        );
    }

    function _configure(uint8 action, bytes memory params) internal {
        _safeExec(address(module), abi.encodeCall(TreasuryModule.configure, (action, params)));
    }

    // ── module operations

    function _c(address to, uint256 value, bytes memory data) internal pure returns (TreasuryModule.Call memory) {
        return TreasuryModule.Call(to, value, data, 0);
    }

    function _one(TreasuryModule.Call memory c) internal pure returns (TreasuryModule.Call[] memory cs) {
        cs = new TreasuryModule.Call[](1);
        cs[0] = c;
    }

    function _pay(address to, uint256 amount) internal view returns (TreasuryModule.Call memory) {
        return _c(address(token), 0, abi.encodeCall(TestToken.transfer, (to, amount)));
    }

    function _frost(FrostSigner.Key memory k, bytes32 digest) internal returns (TreasuryModule.FrostSig memory) {
        FrostSigner.Sig memory s = FrostSigner.sign(vm, k, digest);
        return TreasuryModule.FrostSig(s.rX, s.rY, s.z);
    }

    function _rootSig(uint256 pk, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, digest);
        return abi.encodePacked(r, s, v);
    }

    /// @dev Signs `calls` at the current nonce with the group key (tier 1).
    function _sign(TreasuryModule.Call[] memory calls) internal returns (Signed memory s) {
        s = _signAt(calls, 1);
    }

    /// @dev Signs `calls` with the group key and the root (tier 2: the tier is in the digest).
    function _sign2(TreasuryModule.Call[] memory calls) internal returns (Signed memory s) {
        s = _signAt(calls, 2);
        s.rootSig = _rootSig(ROOT_PK, s.digest);
    }

    function _signAt(TreasuryModule.Call[] memory calls, uint8 tier) internal returns (Signed memory s) {
        s.calls = calls;
        s.nonce = module.nonce();
        s.deadline = block.timestamp + 1 hours;
        s.digest = module.operationDigest(calls, s.nonce, s.deadline, tier);
        s.sig = _frost(group, s.digest);
    }

    function _submit(Signed memory s) internal {
        module.exec(s.calls, s.nonce, s.deadline, s.sig, s.rootSig);
    }

    function _exec(TreasuryModule.Call[] memory calls) internal {
        _submit(_sign(calls));
    }

    // ── admin operations

    struct SignedAdmin {
        TreasuryModule.AdminOp op;
        TreasuryModule.FrostSig frostSig;
        bytes rootSig;
    }

    function _adminOp(uint8 action, bytes memory params) internal view returns (TreasuryModule.AdminOp memory) {
        return TreasuryModule.AdminOp(action, params, module.adminNonce(), block.timestamp + 1 hours);
    }

    function _byRoot(uint8 action, bytes memory params) internal view returns (SignedAdmin memory a) {
        a.op = _adminOp(action, params);
        a.rootSig = _rootSig(ROOT_PK, module.adminDigest(a.op));
    }

    function _byQuorum(uint8 action, bytes memory params) internal returns (SignedAdmin memory a) {
        a.op = TreasuryModule.AdminOp(action, params, module.quorumAdminNonce(), block.timestamp + 1 hours);
        a.frostSig = _frost(group, module.adminDigest(a.op));
    }

    function _admin(SignedAdmin memory a) internal {
        module.admin(a.op, a.frostSig, a.rootSig);
    }

    function _rootAdmin(uint8 action, bytes memory params) internal {
        _admin(_byRoot(action, params));
    }

    function _changeId(uint8 action, bytes memory params, uint256 adminNonce) internal pure returns (bytes32) {
        return keccak256(abi.encode(action, params, adminNonce));
    }
}
