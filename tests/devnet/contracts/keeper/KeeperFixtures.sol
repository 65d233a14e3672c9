// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

// Test fixtures for treasury's keeper jobs (issue 18), written against Chainlink's published
// interfaces (npm @chainlink/contracts, unpacked by scripts/install.sh into .tools/chainlink) and
// compiled by scripts/compile-keeper-fixtures.mjs into .tools/chainlink/artifacts. Never shipped.

import {AutomationCompatible} from "@chainlink/contracts/src/v0.8/automation/AutomationCompatible.sol";
import {ILogAutomation, Log} from "@chainlink/contracts/src/v0.8/automation/interfaces/ILogAutomation.sol";

/// An upkeep whose check always asks for work and whose perform always reverts.
contract RevertingPerformUpkeep is AutomationCompatible {

    function checkUpkeep(bytes calldata data) external view override cannotExecute returns (bool, bytes memory) {
        return (true, data);
    }

    function performUpkeep(bytes calldata) external pure override {
        revert("perform broken");
    }
}

/// An upkeep whose perform writes `slots` fresh storage slots (about 22k gas each).
contract GasHungryUpkeep is AutomationCompatible {
    uint256 public slots;
    uint256 public performed;
    mapping(uint256 => uint256) public filled;

    constructor(uint256 slots_) {
        slots = slots_;
    }

    function checkUpkeep(bytes calldata) external view override cannotExecute returns (bool, bytes memory) {
        return (performed == 0, "");
    }

    function performUpkeep(bytes calldata) external override {
        uint256 base = performed * slots;
        for (uint256 i = 0; i < slots; i++) {
            filled[base + i] = i + 1;
        }
        performed += 1;
    }
}

/// A log-triggered upkeep (Chainlink's ILogAutomation): every `Ping` log it emits asks for one
/// perform, which records the log's block hash and index; a second perform for a log is refused.
contract LogTriggeredCounter is ILogAutomation {
    event Ping(uint256 indexed id);
    event Handled(bytes32 blockHash, uint256 index, uint256 id);

    uint256 public pings;
    uint256 public performed;
    mapping(bytes32 => bool) public handled;

    function ping() external {
        pings += 1;
        emit Ping(pings);
    }

    function checkLog(Log calldata log, bytes memory) external view override returns (bool, bytes memory) {
        bytes32 key = keccak256(abi.encode(log.blockHash, log.index));
        if (handled[key] || log.source != address(this)) return (false, "");
        return (true, abi.encode(log.blockHash, log.index, uint256(log.topics[1])));
    }

    function performUpkeep(bytes calldata performData) external override {
        (bytes32 blockHash, uint256 index, uint256 id) = abi.decode(performData, (bytes32, uint256, uint256));
        bytes32 key = keccak256(abi.encode(blockHash, index));
        require(!handled[key], "already handled");
        handled[key] = true;
        performed += 1;
        emit Handled(blockHash, index, id);
    }
}

/// What a Gelato-style resolver's payload calls.
contract ResolverCounter {
    uint256 public count;
    uint256 public lastAt;

    function increment(uint256 expected) external {
        require(expected == count, "stale payload");
        count += 1;
        lastAt = block.timestamp;
    }
}

/// A Gelato resolver: `checker()` answers `(canExec, execPayload)`; work is due every `interval`
/// seconds, and the payload carries the count it expects so a stale one reverts.
contract GelatoStyleResolver {
    ResolverCounter public immutable counter;
    uint256 public immutable interval;

    constructor(ResolverCounter counter_, uint256 interval_) {
        counter = counter_;
        interval = interval_;
    }

    function checker() external view returns (bool canExec, bytes memory execPayload) {
        if (block.timestamp < counter.lastAt() + interval) return (false, bytes("not yet"));
        return (true, abi.encodeCall(ResolverCounter.increment, (counter.count())));
    }
}

import {IAutomationV21PlusCommon} from "@chainlink/contracts/src/v0.8/automation/interfaces/IAutomationV21PlusCommon.sol";

/// A stand-in for a Chainlink Automation registry (2.1+): only the view functions
/// `treasury keeper import chainlink` reads, with the published interface's types
/// (`IAutomationV21PlusCommon.UpkeepInfoLegacy`, `LogTriggerConfig`, trigger type 0/1).
contract UpkeepRegistryViews {
    mapping(uint256 => IAutomationV21PlusCommon.UpkeepInfoLegacy) internal upkeeps;
    mapping(uint256 => uint8) internal triggerTypes;
    mapping(uint256 => bytes) internal triggerConfigs;

    function registerConditional(uint256 id, address target, uint32 performGas, bytes calldata checkData) external {
        upkeeps[id].target = target;
        upkeeps[id].performGas = performGas;
        upkeeps[id].checkData = checkData;
        triggerTypes[id] = 0;
    }

    function registerLog(uint256 id, address target, uint32 performGas, address source, bytes32 topic0) external {
        upkeeps[id].target = target;
        upkeeps[id].performGas = performGas;
        triggerTypes[id] = 1;
        triggerConfigs[id] = abi.encode(
            IAutomationV21PlusCommon.LogTriggerConfig({
                contractAddress: source,
                filterSelector: 0,
                topic0: topic0,
                topic1: bytes32(0),
                topic2: bytes32(0),
                topic3: bytes32(0)
            })
        );
    }

    function getUpkeep(uint256 id) external view returns (IAutomationV21PlusCommon.UpkeepInfoLegacy memory) {
        require(upkeeps[id].target != address(0), "unknown upkeep");
        return upkeeps[id];
    }

    function getTriggerType(uint256 id) external view returns (uint8) {
        return triggerTypes[id];
    }

    function getUpkeepTriggerConfig(uint256 id) external view returns (bytes memory) {
        return triggerConfigs[id];
    }
}
