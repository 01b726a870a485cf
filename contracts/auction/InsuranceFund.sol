// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/**
 * @title InsuranceFund
 * @notice Quote-asset insurance fund of the liquidation module: receives liquidation penalties, pays what an
 * insolvent book is short, and records bad debt when it cannot.
 *
 * The fund's money is quote cash held inside the clearinghouse under the liquidation module's own address
 * (docs/contracts.md: "an insurance fund can simply be an account address inside the clearinghouse"); this
 * contract keeps the books of that cash: `fundBalance` is the part free to pay shortfalls.
 *
 * Bad-debt rule (the only one): a shortfall the fund cannot pay is recorded as a **protocol deficit** owed to the
 * bidder who took the insolvent book, as a claim in a first-in-first-out queue. Every quote unit that later reaches
 * the fund (penalties, donations) repays the deficit first; only what is left raises `fundBalance`. Claim `i` is
 * repaid once the cumulative repayments pass the claims queued before it (`cumulativeBefore`), so repayment is O(1)
 * per claim and never loops. Depositors' balances are never touched (no socialised haircut): a loss is borne by the
 * protocol's future penalty income, as MakerDAO's Vow nets `Joy` against `Sin` before anything else.
 */
abstract contract InsuranceFund {
    /// @notice A bad-debt claim: `amount` owed to `creditor`, repaid after `cumulativeBefore` of earlier claims.
    struct Claim {
        address creditor;
        uint128 amount;
        uint128 paid;
        uint256 cumulativeBefore;
    }

    /// @notice Quote units free to pay shortfalls.
    uint256 public fundBalance;
    /// @notice Cumulative bad debt ever recorded.
    uint256 public badDebtRecorded;
    /// @notice Cumulative bad debt repaid (reserved for claimants until they collect).
    uint256 public badDebtRepaid;
    /// @notice Cumulative amount collected by claimants.
    uint256 public badDebtCollected;

    Claim[] private _claims;

    /// @notice The fund received `amount` (`repaid` of it went to the deficit first).
    event FundReceived(
        uint256 indexed auctionId, address indexed from, uint256 amount, uint256 repaid, uint256 fundBalance, uint256 deficit
    );
    /// @notice The fund paid `paid` of an insolvent book's shortfall of `owed` to `to`.
    event ShortfallPaid(uint256 indexed auctionId, address indexed to, uint256 owed, uint256 paid, uint256 fundBalance);
    /// @notice `amount` could not be paid and was recorded as bad debt owed to `creditor` (claim `claimId`).
    event BadDebtRecorded(
        uint256 indexed auctionId, uint256 indexed claimId, address indexed creditor, uint256 amount, uint256 deficit
    );
    /// @notice The creditor of claim `claimId` collected `amount` of repaid bad debt.
    event BadDebtCollected(uint256 indexed claimId, address indexed creditor, uint256 amount, uint256 remaining);

    /// @notice Claim `claimId` does not exist.
    error UnknownClaim(uint256 claimId);
    /// @notice Nothing of claim `claimId` has been repaid that is not already collected.
    error NothingToCollect(uint256 claimId);

    /// @notice Bad debt recorded and not yet repaid.
    function deficit() public view returns (uint256) {
        return badDebtRecorded - badDebtRepaid;
    }

    /// @notice Quote units the module's clearinghouse account holds on the fund's behalf (free + owed to claimants).
    function fundLiabilities() public view returns (uint256) {
        return fundBalance + (badDebtRepaid - badDebtCollected);
    }

    /// @notice Number of bad-debt claims ever recorded.
    function claimCount() external view returns (uint256) {
        return _claims.length;
    }

    /// @notice Claim `claimId` and how much of it can be collected now.
    function claimOf(uint256 claimId) public view returns (Claim memory claim, uint256 collectable) {
        if (claimId >= _claims.length) revert UnknownClaim(claimId);
        claim = _claims[claimId];
        uint256 repaid;
        if (badDebtRepaid > claim.cumulativeBefore) {
            repaid = badDebtRepaid - claim.cumulativeBefore;
            if (repaid > claim.amount) repaid = claim.amount;
        }
        collectable = repaid - claim.paid;
    }

    /**
     * @notice Pays the creditor of `claimId` what has been repaid of it so far (quote cash into its account).
     * @dev Anyone may call; the money always goes to the claim's creditor.
     */
    function collectBadDebt(uint256 claimId) external virtual;

    /// @dev Books `amount` arriving at the fund: the deficit is repaid first, the rest becomes free balance.
    function _fundReceive(uint256 auctionId, address from, uint256 amount) internal {
        if (amount == 0) return;
        uint256 owed = badDebtRecorded - badDebtRepaid;
        uint256 repaid = amount < owed ? amount : owed;
        if (repaid > 0) badDebtRepaid += repaid;
        uint256 balance = fundBalance + (amount - repaid);
        fundBalance = balance;
        emit FundReceived(auctionId, from, amount, repaid, balance, owed - repaid);
    }

    /**
     * @dev Books a shortfall of `owed` due to `to`: pays what the free balance allows, records the rest as a claim.
     * The caller moves the `paid` cash.
     */
    function _fundCoverShortfall(uint256 auctionId, address to, uint256 owed) internal returns (uint256 paid) {
        uint256 balance = fundBalance;
        paid = owed < balance ? owed : balance;
        if (paid > 0) {
            balance -= paid;
            fundBalance = balance;
            emit ShortfallPaid(auctionId, to, owed, paid, balance);
        }
        uint256 bad = owed - paid;
        if (bad > 0) {
            uint256 claimId = _claims.length;
            _claims.push(Claim(to, uint128(bad), 0, badDebtRecorded));
            badDebtRecorded += bad;
            emit BadDebtRecorded(auctionId, claimId, to, bad, badDebtRecorded - badDebtRepaid);
        }
    }

    /// @dev Marks `collectable` of claim `claimId` as collected and returns its creditor and the amount.
    function _fundCollect(uint256 claimId) internal returns (address creditor, uint256 amount) {
        Claim memory claim;
        (claim, amount) = claimOf(claimId);
        if (amount == 0) revert NothingToCollect(claimId);
        _claims[claimId].paid = claim.paid + uint128(amount);
        badDebtCollected += amount;
        creditor = claim.creditor;
        emit BadDebtCollected(claimId, creditor, amount, claim.amount - claim.paid - amount);
    }
}
