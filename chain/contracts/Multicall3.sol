// SPDX-License-Identifier: MIT OR Apache-2.0
pragma solidity ^0.8.24;

/// @title Multicall3
/// @notice The subset of the Multicall3 interface the treasury snapshot reader uses: batched calls
///         with per-call failure tolerance, and block/chain getters.
contract Multicall3 {
    struct Call3 {
        address target;
        bool allowFailure;
        bytes callData;
    }

    struct Result {
        bool success;
        bytes returnData;
    }

    /// @notice A call with `allowFailure == false` failed; carries its index and revert data.
    error CallFailed(uint256 index, bytes reason);

    /// @notice Calls each target in order; reverts if a call that does not allow failure fails.
    function aggregate3(Call3[] calldata calls) external payable returns (Result[] memory results) {
        uint256 n = calls.length;
        results = new Result[](n);
        for (uint256 i; i < n; ++i) {
            Call3 calldata c = calls[i];
            (bool ok, bytes memory ret) = c.target.call(c.callData);
            if (!ok && !c.allowFailure) revert CallFailed(i, ret);
            results[i] = Result(ok, ret);
        }
    }

    function getEthBalance(address account) external view returns (uint256) {
        return account.balance;
    }

    function getBlockNumber() external view returns (uint256) {
        return block.number;
    }

    function getCurrentBlockTimestamp() external view returns (uint256) {
        return block.timestamp;
    }

    function getBlockHash(uint256 blockNumber) external view returns (bytes32) {
        return blockhash(blockNumber);
    }

    function getChainId() external view returns (uint256) {
        return block.chainid;
    }
}
