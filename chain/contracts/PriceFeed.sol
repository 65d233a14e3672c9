// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

/// @notice Chainlink's price feed interface (AggregatorV3Interface).
interface AggregatorV3Interface {
    function decimals() external view returns (uint8);
    function description() external view returns (string memory);
    function version() external view returns (uint256);
    function getRoundData(uint80 roundId)
        external
        view
        returns (uint80 roundId_, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound);
    function latestRoundData()
        external
        view
        returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound);
}

/// @title PriceFeed
/// @notice An owner-moved price feed with the Chainlink AggregatorV3Interface, for the demo and
///         tests (stale prices via `setAnswerAt`). Every update starts a new round.
contract PriceFeed is AggregatorV3Interface {
    struct Round {
        int256 answer;
        uint64 startedAt;
        uint64 updatedAt;
    }

    error NotOwner();
    error NoSuchRound(uint80 roundId);

    event AnswerUpdated(int256 indexed current, uint256 indexed roundId, uint256 updatedAt);

    address public immutable owner;
    uint8 public immutable override decimals;
    string public override description;
    uint80 public latestRound;
    mapping(uint80 roundId => Round) private _rounds;

    constructor(uint8 decimals_, string memory description_, int256 initialAnswer) {
        owner = msg.sender;
        decimals = decimals_;
        description = description_;
        _push(initialAnswer, block.timestamp);
    }

    function version() external pure override returns (uint256) {
        return 4;
    }

    /// @notice Starts a new round with `answer`, updated now.
    function setAnswer(int256 answer) external {
        if (msg.sender != owner) revert NotOwner();
        _push(answer, block.timestamp);
    }

    /// @notice Starts a new round with `answer` and an explicit `updatedAt` (e.g. in the past).
    function setAnswerAt(int256 answer, uint256 updatedAt) external {
        if (msg.sender != owner) revert NotOwner();
        _push(answer, updatedAt);
    }

    function getRoundData(uint80 roundId)
        external
        view
        override
        returns (uint80, int256, uint256, uint256, uint80)
    {
        Round memory r = _rounds[roundId];
        if (roundId == 0 || roundId > latestRound) revert NoSuchRound(roundId);
        return (roundId, r.answer, r.startedAt, r.updatedAt, roundId);
    }

    function latestRoundData() external view override returns (uint80, int256, uint256, uint256, uint80) {
        uint80 id = latestRound;
        Round memory r = _rounds[id];
        return (id, r.answer, r.startedAt, r.updatedAt, id);
    }

    function _push(int256 answer, uint256 updatedAt) private {
        uint80 id = latestRound + 1;
        latestRound = id;
        _rounds[id] = Round(answer, uint64(updatedAt), uint64(updatedAt));
        emit AnswerUpdated(answer, id, updatedAt);
    }
}
