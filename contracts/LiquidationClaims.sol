// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {OptionBook} from "./OptionBook.sol";
import {Claim, Lot} from "./libraries/BackstopTypes.sol";

/// @title LiquidationClaims
/// @notice Deferred delivery of liquidated books. A liquidation bid records a claim: a WAD fraction of the
/// liquidated account's stored book B (positions, collateral, cash), which is frozen until every claim on it is
/// settled. Settlement (`settleClaim`, anyone, any time) moves the claimed share of B into the holder's own
/// account exactly as an immediate pro-rata transfer would have (rounding against the liquidated account).
/// Until then the views report effective books: the liquidated account keeps `1 - pending` of B, each holder
/// owns its claim on top of its own book, and the keepers attest those effective books.
/// @dev Freeze rules: a frozen account (pending claims on its book) cannot trade, withdraw or receive non-quote
/// collateral; quote cash credited to it (deposits, escrow releases) is kept outside B in `creditedCash` and
/// joins its cash when the last claim is settled. A holder with an unsettled claim cannot trade or withdraw until
/// it settles. Expiry settlement of a frozen book is allowed: it converts a position of B into cash of B at the
/// settlement price, which changes no claimant's value.
abstract contract LiquidationClaims is OptionBook {
    using SafeCast for uint256;
    using SafeCast for int256;

    // ------------------------------------------------------------------ storage

    mapping(address account => Lot) internal _lots;
    mapping(address holder => Claim) internal _claims;

    // ------------------------------------------------------------------ internal functions

    /// @dev Reverts if `account` is bound to a breach, its book is frozen or it holds an unsettled claim.
    function _requireNoClaims(address account) internal view {
        _requireUnbound(account, _lots[account]);
        Claim memory c = _claims[account];
        if (c.fractionWad != 0) revert CH_ClaimUnsettled(account, c.source, c.fractionWad);
    }

    /// @dev Records a claim of `holder` on `shareWad` of what is left of `source`'s effective book, and moves
    /// `payment` quote cash from the holder to the caller (the liquidation module; negative: from the module to the
    /// holder). Returns the source's new stateNonce and the claim as a fraction of the frozen book.
    function _recordClaim(address source, address holder, uint256 shareWad, int256 payment)
        internal
        returns (uint32 sourceNonce, uint256 claimWad)
    {
        if (shareWad == 0 || shareWad > WAD) revert CH_InvalidFraction(shareWad);
        if (holder == address(0)) revert CH_ZeroAddress();
        if (holder == source) revert CH_SelfTrade(source);
        {
            Claim memory own = _claims[source];
            if (own.fractionWad != 0) revert CH_ClaimUnsettled(source, own.source, own.fractionWad);
            _requireUnbound(holder, _lots[holder]);
        }
        Claim memory c = _claims[holder];
        if (c.fractionWad != 0 && c.source != source) revert CH_ClaimUnsettled(holder, c.source, c.fractionWad);
        Lot memory lot = _lots[source];
        uint256 remaining = WAD - lot.movedWad - lot.pendingWad;
        // rounded up: against the liquidated account, like the transfer it stands for
        claimWad = shareWad == WAD ? remaining : Math.mulDiv(shareWad, remaining, WAD, Math.Rounding.Ceil);
        if (claimWad == 0) revert CH_NothingToClaim(source);
        lot.pendingWad += uint64(claimWad);
        lot.primed = true;
        _lots[source] = lot;
        _claims[holder] = Claim(source, c.fractionWad + uint64(claimWad));
        if (payment != 0) {
            _cash[holder] -= payment;
            _cash[msg.sender] += payment;
        }
        _bumpNonce(source);
        _bumpNonce(holder);
        sourceNonce = _accounts[source].stateNonce;
        emit ClaimRecorded(source, holder, shareWad, claimWad, lot.pendingWad, lot.movedWad, payment);
    }

    /// @dev Moves `holder`'s claimed share of its source's stored book into the holder's account (stateNonces kept).
    function _settleClaim(address holder) internal {
        Claim memory c = _claims[holder];
        if (c.fractionWad == 0) revert CH_NoClaim(holder);
        address source = c.source;
        Lot memory lot = _lots[source];
        uint256 share = _storedShare(c.fractionWad, lot.movedWad);
        _claims[holder].fractionWad = 0; // `source` stays: the slot is kept non-zero
        lot.pendingWad -= c.fractionWad;
        lot.movedWad += c.fractionWad;
        if (lot.pendingWad == 0) lot.movedWad = 0;
        uint256 released = _takeReleasable(lot);
        _lots[source] = lot;
        _moveShare(source, holder, share);
        if (released != 0) _cash[source] += released.toInt256();
        // No stateNonce moves: both effective books are unchanged (the holder's exactly, the source's up to rounding
        // in its favour), so attestations of them stay valid and an auction running on the source goes on.
        emit ClaimSettled(source, holder, c.fractionWad, share, released);
    }

    /// @dev A claim of `fractionWad` of B as a share of the stored `(1 - moved) B` (rounded up; exactly 1 for the
    /// whole rest).
    function _storedShare(uint256 fractionWad, uint256 movedWad) internal pure returns (uint256) {
        uint256 base = WAD - movedWad;
        return fractionWad == base ? WAD : Math.mulDiv(fractionWad, WAD, base, Math.Rounding.Ceil);
    }

    /// @dev Moves `shareWad` of every position, collateral balance and cash of `from` to `to`, rounding against
    /// `from` (longs, collateral, positive cash rounded up; shorts and debt rounded down). The receiver's position
    /// and asset caps do not apply: a settlement must always go through.
    function _moveShare(address from, address to, uint256 shareWad) internal {
        uint256[] memory ids = _seriesOf[from];
        for (uint256 i; i < ids.length; ++i) {
            uint256 id = ids[i];
            int256 size = _positions[from][id];
            int256 m = _shareOf(size, shareWad);
            if (m == 0) continue;
            _setPosition(from, id, size - m, true);
            _setPosition(to, id, _positions[to][id] + m, false);
            emit PositionTransferred(from, to, id, m);
        }
        address[] memory assets = _assetsOf[from];
        for (uint256 i; i < assets.length; ++i) {
            address asset = assets[i];
            uint256 moved = Math.mulDiv(_collateral[from][asset], shareWad, WAD, Math.Rounding.Ceil);
            _subCollateral(from, asset, moved);
            _addCollateral(to, asset, moved, false);
            emit CollateralTransferred(from, to, asset, moved);
        }
        int256 cash = _cash[from];
        if (cash != 0) {
            int256 m = _shareOf(cash, shareWad);
            _cash[from] = cash - m;
            _cash[to] += m;
            emit CashTransferred(from, to, m);
        }
        emit PortfolioShareTransferred(from, to, shareWad);
    }

    /// @dev `shareWad` of a signed amount, rounded against its owner: an asset (> 0) up, a liability down.
    function _shareOf(int256 amount, uint256 shareWad) internal pure returns (int256) {
        if (amount >= 0) return Math.mulDiv(uint256(amount), shareWad, WAD, Math.Rounding.Ceil).toInt256();
        return -Math.mulDiv(uint256(-amount), shareWad, WAD, Math.Rounding.Floor).toInt256();
    }

    /// @dev Quote cash credited to a bound or frozen account stays outside its book.
    function _creditCash(address account, int256 amount) internal override {
        Lot storage lot = _lots[account];
        if (lot.pendingWad != 0 || lot.inBreach) {
            lot.creditedCash += uint256(amount).toUint96();
        } else {
            _cash[account] += amount;
        }
    }

    /// @dev A frozen or bound account receives only quote cash.
    function _deposit(address account, address asset, uint256 amount) internal override {
        if (asset != quoteAsset) _requireUnbound(account, _lots[account]);
        super._deposit(account, asset, amount);
    }

    /// @dev A breach was recorded: bind the book to it (no trade, withdrawal or non-quote deposit; quote credits held
    /// apart; stateNonce moved only by the liquidation module).
    function _bindToBreach(address account) internal override {
        Lot storage lot = _lots[account];
        if (!lot.inBreach) (lot.inBreach, lot.primed) = (true, true);
    }

    /// @dev A healthy record of the current portfolio lifts a breach that no running auction holds.
    function _liftBreach(address account, uint64 attestedAt) internal override {
        Lot memory lot = _lots[account];
        // Only an attestation strictly later than the breach's lifts it: two roots may carry one timestamp, and the
        // account must not replay the healthy leaf of the earlier one over the later breach (finding H-9).
        if (lot.inBreach && !lot.inAuction && _breaches[account].timestamp < attestedAt) _unbind(account, lot);
    }

    /// @dev Clears the breach record and the binding; credited cash joins the account's cash unless claims are
    /// still pending (then it joins at the last settlement).
    function _unbind(address account, Lot memory lot) internal {
        delete _breaches[account];
        (lot.inBreach, lot.inAuction) = (false, false);
        uint256 released = _takeReleasable(lot);
        _lots[account] = lot;
        if (released != 0) _cash[account] += released.toInt256();
        emit BreachCleared(account);
    }

    /// @dev Reverts if the book of `account` (ledger `lot`) is bound to a breach or frozen by pending claims.
    function _requireUnbound(address account, Lot memory lot) internal pure {
        if (lot.inBreach) revert CH_AccountInBreach(account);
        if (lot.pendingWad != 0) revert CH_ClaimsPending(account, lot.pendingWad);
    }

    /// @dev Cash credited apart joins the account's cash once nothing holds it apart (no pending claim, no breach):
    /// returns that amount and clears it in `lot` (the caller stores `lot`, then credits the cash).
    function _takeReleasable(Lot memory lot) internal pure returns (uint256 released) {
        if (lot.pendingWad == 0 && !lot.inBreach) (released, lot.creditedCash) = (lot.creditedCash, 0);
    }

    /// @dev Whether `account`'s book is bound to a breach record.
    function _inBreach(address account) internal view override returns (bool) {
        return _lots[account].inBreach;
    }

    /// @dev The fraction of its stored book a frozen account keeps (WAD; rounded down).
    function _keptShare(Lot memory lot) internal pure returns (uint256) {
        if (lot.pendingWad == 0) return WAD;
        uint256 base = WAD - lot.movedWad;
        return Math.mulDiv(base - lot.pendingWad, WAD, base, Math.Rounding.Floor);
    }

    /// @dev Effective signed amount of `account` given its stored amount and, for a holder, its source's: a frozen
    /// account keeps its share (assets rounded down, liabilities up); a holder adds what settlement would move.
    function _effective(address account, int256 stored, int256 sourceStored, Claim memory c)
        internal
        view
        returns (int256)
    {
        if (c.fractionWad != 0) {
            return stored + _shareOf(sourceStored, _storedShare(c.fractionWad, _lots[c.source].movedWad));
        }
        uint256 kept = _keptShare(_lots[account]);
        if (kept == WAD) return stored;
        if (stored >= 0) return Math.mulDiv(uint256(stored), kept, WAD, Math.Rounding.Floor).toInt256();
        return -Math.mulDiv(uint256(-stored), kept, WAD, Math.Rounding.Ceil).toInt256();
    }
}
