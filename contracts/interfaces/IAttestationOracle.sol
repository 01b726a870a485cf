// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IKeeperSet} from "./IKeeperSet.sol";
import {SolvencyIndex} from "../libraries/BackstopTypes.sol";

/// @title IAttestationOracle
/// @notice Errors and events of {AttestationOracle}: keeper-attested spot prices, settlement prices and margin roots,
/// their freshness and ordering, the per-account margin record and the breach registry (prefix `AO_`). Part of
/// {IClearinghouse}.
interface IAttestationOracle is IKeeperSet {
    // ------------------------------------------------------------------ events

    /// @notice Keeper-attested spot prices [wad] of `assets`, observed at `timestamp` [unix seconds].
    event PricesPosted(uint64 indexed sequence, uint64 timestamp, address[] assets, uint256[] prices);
    /// @notice The settlement price [wad] of `underlying` for `expiry`, observed at `timestamp`.
    event SettlementPricePosted(address indexed underlying, uint64 indexed expiry, uint256 price, uint64 timestamp);
    /// @notice A keeper-signed margin root was accepted into the root ring.
    event MarginRootPosted(uint64 sequence, bytes32 root, bytes32 inputsHash, uint64 timestamp, uint32 leafCount);
    /// @notice The solvency index [quote base units] signed with the margin root of `sequence` (observed at
    /// `timestamp` [unix seconds]) was stored as the latest (`solvencyIndex()`).
    event SolvencyIndexPosted(uint64 indexed sequence, uint64 timestamp, SolvencyIndex index);
    /// @notice A margin leaf [quote base units] the contract verified: `recorded` when stored as the account's record,
    /// false when skipped (stale or older) or only used by a trade or withdrawal.
    event MarginAttested(
        address indexed account,
        uint64 indexed sequence,
        int256 equity,
        uint256 maintenance,
        uint256 initial,
        int256 modelValue,
        uint32 stateNonce,
        bool recorded
    );
    /// @notice A recorded leaf shows `account` below maintenance margin: its breach record [quote base units].
    event AccountBreached(
        address indexed account,
        int256 equity,
        uint256 maintenance,
        uint256 initial,
        int256 modelValue,
        uint32 stateNonce,
        bytes32 inputsHash,
        bytes32 root,
        uint64 timestamp
    );
    /// @notice The breach record of `account` was deleted (healthy record, cure or end of its auction).
    event BreachCleared(address indexed account);

    // ------------------------------------------------------------------ errors

    /// @notice An attestation observed at `timestamp` is older than `maxAge` [seconds].
    error AO_AttestationExpired(uint64 timestamp, uint256 maxAge);
    /// @notice An attestation's `timestamp` is more than `MAX_FUTURE_SKEW` ahead of the chain.
    error AO_AttestationFromFuture(uint64 timestamp);
    /// @notice `sequence` is not above the last accepted `lastSequence` (or does not fit 40 bits).
    error AO_AttestationReplayed(uint64 sequence, uint64 lastSequence);
    /// @notice `timestamp` is older than the last accepted one (or than the account's record) `lastTimestamp`; for a
    /// leaf, also when it is the record's own second while two or more roots share that second (or that second is
    /// over 255 s before the newest root): the leaf cannot be ranked against the record, a later root's leaf can.
    error AO_AttestationOlder(uint64 timestamp, uint64 lastTimestamp);
    /// @notice `price` of `asset` is zero or too large.
    error AO_InvalidPrice(address asset, uint256 price);
    /// @notice A settlement price observed (or posted) at `timestamp` before `expiry`.
    error AO_SettlementBeforeExpiry(uint64 timestamp, uint64 expiry);
    /// @notice The settlement price of `underlying` for `expiry` is set once.
    error AO_SettlementPriceAlreadySet(address underlying, uint64 expiry);
    /// @notice No margin root of `sequence` is in the ring that the proof's root and header hash to.
    error AO_UnknownMarginRoot(uint64 sequence);
    /// @notice A leaf of `account` attested at stateNonce `attested`, not its current nonce `current`.
    error AO_StaleMarginState(address account, uint32 attested, uint32 current);
    /// @notice The posted solvency index hashes to `posted`, not to the `signed` hash of the margin root.
    error AO_SolvencyIndexMismatch(bytes32 signed, bytes32 posted);
    /// @notice Attested arrays of lengths `a` and `b` (assets and prices) differ.
    error AO_LengthMismatch(uint256 a, uint256 b);
}
