// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Ownable2Step} from "@openzeppelin/contracts/access/Ownable2Step.sol";

/// @title ExpiringPause
/// @notice An emergency pause held by a guardian (or the owner) that ends by itself after `PAUSE_DURATION`. After a
/// pause ends, no new pause can start for `PAUSE_COOLDOWN`, so no key can keep a deployment paused: the longest
/// continuous pause is `PAUSE_DURATION`, and every pause leaves users at least `PAUSE_COOLDOWN` to act.
/// @dev The owner is expected to be a timelock (docs/contracts.md, governance); the guardian is a hot key that can
/// only stop new exposure for a bounded time, never move value. `guardian` and `pausedUntil` share one slot.
/// This part holds the state, the checks and the internal transitions; {ExpiringPause} adds the external entry
/// points (split so that the Clearinghouse's delegatecall half shares the storage without carrying the code).
abstract contract ExpiringPauseState is Ownable2Step {
    /// @notice How long a pause lasts [seconds].
    uint256 public constant PAUSE_DURATION = 3 days;
    /// @notice How long after a pause ends before the next one may start [seconds].
    uint256 public constant PAUSE_COOLDOWN = 1 days;

    /// @notice The key that may pause (besides the owner).
    address public guardian;
    /// @notice End of the current pause [unix seconds]; the contract is paused while `block.timestamp < pausedUntil`.
    uint64 public pausedUntil;

    /// @notice `account` paused the contract until `until`.
    event Paused(address account);
    /// @notice The pause started by `account` ends at `until` [unix seconds].
    event PauseScheduledEnd(address indexed account, uint64 until);
    /// @notice `account` lifted the pause before it expired.
    event Unpaused(address account);
    /// @notice The guardian changed.
    event GuardianSet(address indexed guardian);

    /// @notice The operation is not allowed while paused.
    error EnforcedPause();
    /// @notice The operation needs the contract to be paused.
    error ExpectedPause();
    /// @notice `caller` is neither the guardian nor the owner.
    error PauseNotGuardian(address caller);
    /// @notice A new pause may start only at `availableAt` [unix seconds] (cooldown after the last pause).
    error PauseCooldown(uint256 availableAt);

    /// @notice Whether the contract is paused now.
    function paused() public view returns (bool) {
        return block.timestamp < pausedUntil;
    }

    modifier whenNotPaused() {
        _requireNotPaused();
        _;
    }

    function _requireNotPaused() internal view {
        if (paused()) revert EnforcedPause();
    }
}

/// @title ExpiringPause
/// @notice The entry points of {ExpiringPauseState}: `pause`, `unpause` (guardian or owner) and `setGuardian` (owner).
abstract contract ExpiringPause is ExpiringPauseState {
    /// @dev The guardian or the owner.
    modifier onlyGuardianOrOwner() {
        if (msg.sender != guardian && msg.sender != owner()) revert PauseNotGuardian(msg.sender);
        _;
    }

    /// @notice Pauses for `PAUSE_DURATION` (guardian or owner), unless paused already or within the cooldown after
    /// the previous pause.
    function pause() external onlyGuardianOrOwner {
        uint256 last = pausedUntil;
        if (block.timestamp < last) revert EnforcedPause();
        if (last != 0 && block.timestamp < last + PAUSE_COOLDOWN) revert PauseCooldown(last + PAUSE_COOLDOWN);
        uint64 until = uint64(block.timestamp + PAUSE_DURATION);
        pausedUntil = until;
        emit Paused(msg.sender);
        emit PauseScheduledEnd(msg.sender, until);
    }

    /// @notice Lifts the pause early (guardian or owner). The cooldown then runs from now.
    function unpause() external onlyGuardianOrOwner {
        if (!paused()) revert ExpectedPause();
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
