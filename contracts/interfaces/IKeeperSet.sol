// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title IKeeperSet
/// @notice Errors and events of {KeeperSet}: the owner-governed set of N keepers and the check of M-of-N keeper
/// signatures (prefix `KS_`). Part of {IClearinghouse}.
interface IKeeperSet {
    // ------------------------------------------------------------------ events

    /// @notice `keeper` joined the keeper set.
    event KeeperAdded(address indexed keeper);
    /// @notice `keeper` left the keeper set (every keeper leaves when the set is replaced).
    event KeeperRemoved(address indexed keeper);
    /// @notice An attestation now needs `threshold` distinct keeper signatures.
    event ThresholdSet(uint8 threshold);

    // ------------------------------------------------------------------ errors

    /// @notice `provided` signatures, fewer than `threshold` (or none).
    error KS_TooFewSignatures(uint256 provided, uint256 threshold);
    /// @notice The signature blob's `length` is not a multiple of 65 bytes.
    error KS_MalformedSignatures(uint256 length);
    /// @notice Signature `index` recovers `signer`, not above the previous signer `previous` (signers strictly
    /// ascending, so none counts twice).
    error KS_SignersNotAscending(uint256 index, address signer, address previous);
    /// @notice `signer` is not a registered keeper.
    error KS_NotAKeeper(address signer);
    /// @notice Signature `index` has a high `s` value (malleable; only low-s signatures are accepted).
    error KS_HighSSignature(uint256 index);
    /// @notice Signature `index` recovers no address.
    error KS_InvalidSignature(uint256 index);
    /// @notice `keeper` appears twice in a new keeper set.
    error KS_DuplicateKeeper(address keeper);
}
