// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IClearinghouse} from "../interfaces/IClearinghouse.sol";
import {SolvencyIndex} from "../libraries/BackstopTypes.sol";

/// @title SolvencyReader
/// @notice Test only: a second contract that reads the Clearinghouse's `solvencyIndex()` as any protocol would, and
/// acts on it (a lender, say, that stops new loans while the insurance fund covers less than `minCoverageWad` of the
/// expected tail shortfall).
contract SolvencyReader {
    // ------------------------------------------------------------------ immutables

    /// @notice The Clearinghouse read.
    IClearinghouse public immutable clearinghouse;

    // ------------------------------------------------------------------ storage

    /// @notice The last index read by `snapshot` [quote base units].
    SolvencyIndex public last;
    /// @notice The margin root sequence of `last`.
    uint64 public lastSequence;
    /// @notice The coverage fund / ES 97.5 of `last` [wad].
    uint256 public lastCoverageWad;

    // ------------------------------------------------------------------ constructor

    /// @param clearinghouse_ The Clearinghouse whose index is read.
    constructor(IClearinghouse clearinghouse_) {
        clearinghouse = clearinghouse_;
    }

    // ------------------------------------------------------------------ external functions

    /// @notice Read the index and keep a copy (a state-changing call: proves the read works inside a transaction).
    function snapshot() external {
        (SolvencyIndex memory index, uint64 sequence,, uint256 coverageWad) = clearinghouse.solvencyIndex();
        last = index;
        lastSequence = sequence;
        lastCoverageWad = coverageWad;
    }

    // ------------------------------------------------------------------ external views

    /// @notice Whether the latest index is at most `maxAge` seconds old and its coverage at least `minCoverageWad`.
    /// @param maxAge [seconds] oldest index accepted.
    /// @param minCoverageWad [wad] least fund / ES 97.5 accepted.
    function healthy(uint256 maxAge, uint256 minCoverageWad) external view returns (bool) {
        (, uint64 sequence, uint64 timestamp, uint256 coverageWad) = clearinghouse.solvencyIndex();
        return sequence != 0 && timestamp + maxAge >= block.timestamp && coverageWad >= minCoverageWad;
    }

    /// @notice The total equity [quote base units] and the ES 97.5 shortfall of the latest index.
    function equityAndShortfall() external view returns (int256 totalEquity, uint256 shortfallEs975) {
        (SolvencyIndex memory index,,,) = clearinghouse.solvencyIndex();
        return (index.totalEquity, index.shortfallEs975);
    }
}
