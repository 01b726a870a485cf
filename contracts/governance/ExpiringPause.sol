// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";
import {IExpiringPause} from "../interfaces/IExpiringPause.sol";

/// @title ExpiringPause
/// @notice An emergency pause held by a guardian (or the owner) that ends by itself after `PAUSE_DURATION`. After a
/// pause ends, no new pause can start for `PAUSE_COOLDOWN`, so no key can keep a deployment paused: the longest
/// continuous pause is `PAUSE_DURATION`, and every pause leaves users at least `PAUSE_COOLDOWN` to act.
/// @dev The owner is expected to be a timelock (docs/contracts.md, governance); the guardian is a hot key that can
/// only stop new exposure for a bounded time, never move value. `guardian` and `pausedUntil` share one slot.
/// This part holds the state, the checks and the internal transitions; {ExpiringPause} adds the external entry
/// points (split so that the Clearinghouse's delegatecall half shares the storage without carrying the code).
abstract contract ExpiringPauseState is Ownable2Step, IExpiringPause {
    // ------------------------------------------------------------------ constants

    /// @notice How long a pause lasts [seconds].
    uint256 public constant PAUSE_DURATION = 3 days;
    /// @notice How long after a pause ends before the next one may start [seconds].
    uint256 public constant PAUSE_COOLDOWN = 1 days;

    // ------------------------------------------------------------------ storage

    /// @notice The key that may pause (besides the owner).
    address public guardian;
    /// @notice End of the current pause [unix seconds]; the contract is paused while `block.timestamp < pausedUntil`.
    uint64 public pausedUntil;

    // ------------------------------------------------------------------ modifiers

    modifier whenNotPaused() {
        _requireNotPaused();
        _;
    }

    // ------------------------------------------------------------------ public functions

    /// @notice Whether the contract is paused now.
    function paused() public view returns (bool) {
        return block.timestamp < pausedUntil;
    }

    // ------------------------------------------------------------------ internal functions

    function _requireNotPaused() internal view {
        if (paused()) revert EP_EnforcedPause();
    }
}

/// @title ExpiringPause
/// @notice The entry points of {ExpiringPauseState}: `pause`, `unpause` (guardian or owner) and `setGuardian` (owner).
abstract contract ExpiringPause is ExpiringPauseState {
    // ------------------------------------------------------------------ modifiers

    /// @dev The guardian or the owner.
    modifier onlyGuardianOrOwner() {
        if (msg.sender != guardian && msg.sender != owner()) revert EP_NotGuardian(msg.sender);
        _;
    }

    // ------------------------------------------------------------------ external functions

    /// @notice Pauses for `PAUSE_DURATION` (guardian or owner), unless paused already or within the cooldown after
    /// the previous pause.
    function pause() external onlyGuardianOrOwner {
        uint256 last = pausedUntil;
        if (block.timestamp < last) revert EP_EnforcedPause();
        if (last != 0 && block.timestamp < last + PAUSE_COOLDOWN) revert EP_Cooldown(last + PAUSE_COOLDOWN);
        uint64 until = uint64(block.timestamp + PAUSE_DURATION);
        pausedUntil = until;
        emit Paused(msg.sender);
        emit PauseScheduledEnd(msg.sender, until);
    }

    /// @notice Lifts the pause early (guardian or owner). The cooldown then runs from now.
    function unpause() external onlyGuardianOrOwner {
        if (!paused()) revert EP_ExpectedPause();
        pausedUntil = uint64(block.timestamp);
        emit Unpaused(msg.sender);
    }

    /// @notice Sets the guardian (owner only: a timelocked change). `address(0)` leaves pausing to the owner.
    /// @param newGuardian The new guardian.
    function setGuardian(address newGuardian) external onlyOwner {
        guardian = newGuardian;
        emit GuardianSet(newGuardian);
    }
}
