// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {BreachRecord} from "../../libraries/BackstopTypes.sol";

/**
 * @title IAuctionClearinghouse
 * @notice The part of the protocol core (`Clearinghouse`, docs/contracts.md) the liquidation auction uses: the
 * liquidation hook (callable only by the registered liquidation module) and the views it reads. The breach
 * record is the core's own `BackstopTypes.BreachRecord`, so the two cannot drift apart.
 */
interface IAuctionClearinghouse {
    /// @notice Records `holder`'s claim on `shareWad` of what is left of `source`'s effective book (delivered later
    /// by the core's `settleClaim`) and moves `payment` quote cash from `holder` to the module (negative: from the
    /// module to `holder`); returns the source's new state nonce.
    function recordClaim(address source, address holder, uint256 shareWad, int256 payment)
        external
        returns (uint32 sourceNonce);

    /// @notice Writes `account`'s claim-ledger slot so that bids on it update a non-zero slot.
    function primeLot(address account) external;

    /// @notice Moves `amount` of quote cash from `from` to `to`; `from` may go negative.
    function transferCash(address from, address to, uint256 amount) external;

    /// @notice Deletes the breach record of `account`.
    function clearBreach(address account) external;

    /// @notice Deposits `amount` of `asset` for the caller, paid by the caller.
    function deposit(address asset, uint256 amount) external;

    /// @notice The breach record of `account` (all zero if none).
    function breachOf(address account) external view returns (BreachRecord memory);

    /// @notice Whether `account` has an open breach record.
    function isBreached(address account) external view returns (bool);

    /// @notice The account's current state nonce.
    function stateNonce(address account) external view returns (uint32);

    /// @notice Last recorded margin attestation; `attestedAt` is 0 once the state nonce moved on.
    function marginRecord(address account)
        external
        view
        returns (int256 equity, uint256 maintenance, uint32 nonce, uint32 attestedAt);

    /// @notice Haircut value of the account's collateral plus its quote cash (rounded down); reverts `StalePrice`
    /// if a held asset's spot price is older than the core's `maxPriceAge`.
    function freshCollateralValue(address account) external view returns (int256);

    /// @notice Option series the account holds a position in.
    function seriesOf(address account) external view returns (uint256[] memory);

    /// @notice Signed quote cash of `account`.
    function cashOf(address account) external view returns (int256);

    /// @notice The deployment's quote asset.
    function quoteAsset() external view returns (address);
}
