// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title IInsuranceFund
/// @notice Types, events, errors and functions of {InsuranceFund}, the quote-asset insurance fund of the liquidation
/// module (prefix `IF_`). Part of {ILiquidationAuction}.
interface IInsuranceFund {
    // ------------------------------------------------------------------ types

    /// @notice A bad-debt claim: `amount` owed to `creditor`, repaid after `cumulativeBefore` of earlier claims.
    struct Claim {
        address creditor;
        uint128 amount; // [quote base units] owed
        uint128 paid; // [quote base units] collected so far
        uint256 cumulativeBefore; // [quote base units] of bad debt recorded before this claim
    }

    // ------------------------------------------------------------------ events

    /// @notice The fund received `amount` [quote base units] (`repaid` of it went to the deficit first).
    event FundReceived(
        uint256 indexed auctionId, address indexed from, uint256 amount, uint256 repaid, uint256 fundBalance, uint256 deficit
    );
    /// @notice The fund paid `paid` of an insolvent book's shortfall of `owed` [quote base units] to `to`.
    event ShortfallPaid(uint256 indexed auctionId, address indexed to, uint256 owed, uint256 paid, uint256 fundBalance);
    /// @notice The fund's free balance paid `amount` [quote base units] for a book its account `to` took as buyer of
    /// last resort (the cash stays in the module's account: it becomes the auction's escrow and penalty).
    event FundSpent(uint256 indexed auctionId, address indexed to, uint256 amount, uint256 fundBalance);
    /// @notice `amount` could not be paid and was recorded as bad debt owed to `creditor` (claim `claimId`).
    event BadDebtRecorded(
        uint256 indexed auctionId, uint256 indexed claimId, address indexed creditor, uint256 amount, uint256 deficit
    );
    /// @notice The creditor of claim `claimId` collected `amount` of repaid bad debt.
    event BadDebtCollected(uint256 indexed claimId, address indexed creditor, uint256 amount, uint256 remaining);

    // ------------------------------------------------------------------ errors

    /// @notice Claim `claimId` does not exist.
    error IF_UnknownClaim(uint256 claimId);
    /// @notice Nothing of claim `claimId` has been repaid that is not already collected.
    error IF_NothingToCollect(uint256 claimId);

    // ------------------------------------------------------------------ external functions

    /// @notice Pays the creditor of `claimId` what has been repaid of it so far (quote cash into its account).
    /// @dev Anyone may call; the money always goes to the claim's creditor.
    function collectBadDebt(uint256 claimId) external;

    // ------------------------------------------------------------------ external views

    /// @notice Quote units free to pay shortfalls [quote base units].
    function fundBalance() external view returns (uint256);

    /// @notice Cumulative bad debt ever recorded [quote base units].
    function badDebtRecorded() external view returns (uint256);

    /// @notice Cumulative bad debt repaid (reserved for claimants until they collect) [quote base units].
    function badDebtRepaid() external view returns (uint256);

    /// @notice Cumulative amount collected by claimants [quote base units].
    function badDebtCollected() external view returns (uint256);

    /// @notice Bad debt recorded and not yet repaid [quote base units].
    function deficit() external view returns (uint256);

    /// @notice Quote units the module's clearinghouse account holds on the fund's behalf (free + owed to claimants).
    function fundLiabilities() external view returns (uint256);

    /// @notice Number of bad-debt claims ever recorded.
    function claimCount() external view returns (uint256);

    /// @notice Claim `claimId` and how much of it can be collected now [quote base units].
    function claimOf(uint256 claimId) external view returns (Claim memory claim, uint256 collectable);
}
