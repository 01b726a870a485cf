// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {IInsuranceFund} from "./interfaces/IInsuranceFund.sol";

/// @title InsuranceFund
/// @notice Quote-asset insurance fund of the liquidation module: receives liquidation penalties, pays what an
/// insolvent book is short, and records bad debt when it cannot.
///
/// The fund's money is quote cash held inside the clearinghouse under the liquidation module's own address
/// (docs/contracts.md: "an insurance fund can simply be an account address inside the clearinghouse"); this
/// contract keeps the books of that cash: `fundBalance` is the part free to pay shortfalls.
///
/// Bad-debt rule (the only one): a shortfall the fund cannot pay is recorded as a **protocol deficit** owed to the
/// bidder who took the insolvent book, as a claim in a first-in-first-out queue. Every quote unit that later reaches
/// the fund (penalties, donations) repays the deficit first; only what is left raises `fundBalance`. Claim `i` is
/// repaid once the cumulative repayments pass the claims queued before it (`cumulativeBefore`), so repayment is O(1)
/// per claim and never loops. Depositors' balances are never touched (no socialised haircut): a loss is borne by the
/// protocol's future penalty income, as MakerDAO's Vow nets `Joy` against `Sin` before anything else.
abstract contract InsuranceFund is IInsuranceFund {
    // ------------------------------------------------------------------ storage

    /// @dev Books, in two slots grouped by access (the getters below keep the uint256 interface). Slot 0 is all
    /// that paying a penalty in, paying a shortfall out and every `Bid`/`AuctionEnded` event need; slot 1 changes only
    /// when bad debt is recorded or collected. `badDebtRepaid = _badDebtRecorded - _outstandingDebt`.
    uint128 internal _fundBalance; // quote units free to pay shortfalls
    uint128 internal _outstandingDebt; // bad debt recorded and not yet repaid
    uint128 internal _badDebtRecorded; // cumulative bad debt ever recorded
    uint128 internal _badDebtCollected; // cumulative amount collected by claimants
    Claim[] private _claims;

    // ------------------------------------------------------------------ external views

    /// @notice Number of bad-debt claims ever recorded.
    function claimCount() external view returns (uint256) {
        return _claims.length;
    }

    // ------------------------------------------------------------------ public functions

    /// @notice Quote units free to pay shortfalls.
    function fundBalance() public view returns (uint256) {
        return _fundBalance;
    }

    /// @notice Cumulative bad debt ever recorded.
    function badDebtRecorded() public view returns (uint256) {
        return _badDebtRecorded;
    }

    /// @notice Cumulative bad debt repaid (reserved for claimants until they collect).
    function badDebtRepaid() public view returns (uint256) {
        return uint256(_badDebtRecorded) - _outstandingDebt;
    }

    /// @notice Cumulative amount collected by claimants.
    function badDebtCollected() public view returns (uint256) {
        return _badDebtCollected;
    }

    /// @notice Bad debt recorded and not yet repaid.
    function deficit() public view returns (uint256) {
        return _outstandingDebt;
    }

    /// @notice Quote units the module's clearinghouse account holds on the fund's behalf (free + owed to claimants).
    function fundLiabilities() public view returns (uint256) {
        return uint256(_fundBalance) + (badDebtRepaid() - _badDebtCollected);
    }

    /// @notice Claim `claimId` and how much of it can be collected now.
    function claimOf(uint256 claimId) public view returns (Claim memory claim, uint256 collectable) {
        if (claimId >= _claims.length) revert IF_UnknownClaim(claimId);
        claim = _claims[claimId];
        uint256 repaid;
        uint256 repaidTotal = badDebtRepaid();
        if (repaidTotal > claim.cumulativeBefore) {
            repaid = repaidTotal - claim.cumulativeBefore;
            if (repaid > claim.amount) repaid = claim.amount;
        }
        collectable = repaid - claim.paid;
    }

    // ------------------------------------------------------------------ internal functions

    /// @dev Books `amount` arriving at the fund: the deficit is repaid first, the rest becomes free balance.
    function _fundReceive(uint256 auctionId, address from, uint256 amount) internal {
        if (amount == 0) return;
        uint256 owed = _outstandingDebt;
        uint256 repaid = amount < owed ? amount : owed;
        uint256 balance = _fundBalance + (amount - repaid);
        (_fundBalance, _outstandingDebt) = (SafeCast.toUint128(balance), uint128(owed - repaid)); // one slot write
        emit FundReceived(auctionId, from, amount, repaid, balance, owed - repaid);
    }

    /// @dev Books a shortfall of `owed` due to `to`: pays what the free balance allows, records the rest as a claim.
    /// The caller moves the `paid` cash.
    function _fundCoverShortfall(uint256 auctionId, address to, uint256 owed) internal returns (uint256 paid) {
        uint256 balance = _fundBalance;
        paid = owed < balance ? owed : balance;
        if (paid > 0) {
            balance -= paid;
            _fundBalance = uint128(balance);
            emit ShortfallPaid(auctionId, to, owed, paid, balance);
        }
        uint256 bad = owed - paid;
        if (bad > 0) {
            uint256 claimId = _claims.length;
            uint256 recorded = _badDebtRecorded;
            _claims.push(Claim(to, SafeCast.toUint128(bad), 0, recorded));
            _badDebtRecorded = SafeCast.toUint128(recorded + bad);
            uint256 outstanding = _outstandingDebt + bad;
            _outstandingDebt = uint128(outstanding); // <= _badDebtRecorded
            emit BadDebtRecorded(auctionId, claimId, to, bad, outstanding);
        }
    }

    /// @dev Books `amount` (<= the free balance, checked by the caller) paid from the free balance for a book the fund's
    /// account `to` takes; the cash stays in the module's account (the auction's escrow and penalty).
    function _fundSpend(uint256 auctionId, address to, uint256 amount) internal {
        uint256 balance = _fundBalance - amount;
        _fundBalance = uint128(balance);
        emit FundSpent(auctionId, to, amount, balance);
    }

    /// @dev Marks `collectable` of claim `claimId` as collected and returns its creditor and the amount.
    function _fundCollect(uint256 claimId) internal returns (address creditor, uint256 amount) {
        Claim memory claim;
        (claim, amount) = claimOf(claimId);
        if (amount == 0) revert IF_NothingToCollect(claimId);
        _claims[claimId].paid = claim.paid + uint128(amount);
        _badDebtCollected += uint128(amount); // amount <= repaid - collected
        creditor = claim.creditor;
        emit BadDebtCollected(claimId, creditor, amount, claim.amount - claim.paid - amount);
    }
}
