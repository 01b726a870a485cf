// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title IExpiringPause
/// @notice Errors and events of {ExpiringPause}: the guardian's pause that expires by itself (prefix `EP_`). Part of
/// {IClearinghouse} and {ILiquidationAuction}.
interface IExpiringPause {
    // ------------------------------------------------------------------ events

    /// @notice `account` paused the contract.
    event Paused(address account);
    /// @notice The pause started by `account` ends at `until` [unix seconds].
    event PauseScheduledEnd(address indexed account, uint64 until);
    /// @notice `account` lifted the pause before it expired.
    event Unpaused(address account);
    /// @notice The guardian changed.
    event GuardianSet(address indexed guardian);

    // ------------------------------------------------------------------ errors

    /// @notice The operation is not allowed while paused.
    error EP_EnforcedPause();
    /// @notice The operation needs the contract to be paused.
    error EP_ExpectedPause();
    /// @notice `caller` is neither the guardian nor the owner.
    error EP_NotGuardian(address caller);
    /// @notice A new pause may start only at `availableAt` [unix seconds] (cooldown after the last pause).
    error EP_Cooldown(uint256 availableAt);
}
