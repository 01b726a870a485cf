// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {TimelockController} from "@openzeppelin/contracts/governance/TimelockController.sol";

/// @title BackstopTimelock
/// @notice The owner of every Backstop deployment: OpenZeppelin's `TimelockController`, unchanged. Every power that
/// can loosen risk or move value (keeper set, listing, loosening haircuts and caps, risk admin, guardian, auction
/// configuration, ownership itself) is scheduled here and runs only after `getMinDelay()` (a deployment parameter,
/// 2 days by default), so users see it coming and can leave. See docs/contracts.md, "Governance".
contract BackstopTimelock is TimelockController {
    // ------------------------------------------------------------------ constructor

    /// @param minDelay Minimum delay of every operation [seconds].
    /// @param proposers Who may schedule (and cancel) operations.
    /// @param executors Who may execute ready operations (`address(0)`: anyone).
    /// @param admin Optional bootstrap admin (`address(0)`: the timelock administers itself).
    constructor(uint256 minDelay, address[] memory proposers, address[] memory executors, address admin)
        TimelockController(minDelay, proposers, executors, admin)
    {}
}
