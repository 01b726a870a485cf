// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";
import {KeeperSet} from "./KeeperSet.sol";
import {IClearinghouse} from "./interfaces/IClearinghouse.sol";
import {ExpiringPauseState} from "./governance/ExpiringPause.sol";
import {CollateralVault} from "./CollateralVault.sol";
import {LiquidationClaims} from "./LiquidationClaims.sol";
import {AccountState, BackstopTypes, MarginProof, Quote, Series} from "./libraries/BackstopTypes.sol";

/// @title ClearinghouseBase
/// @notice Storage layout and internal logic shared by `Clearinghouse` (hot paths) and `ClearinghouseAdmin`
/// (governance, settlement, liquidation hook, views; reached through `Clearinghouse`'s fallback by delegatecall).
/// Both inherit exactly this contract and declare no state of their own, so their storage layouts are identical.
abstract contract ClearinghouseBase is LiquidationClaims, ReentrancyGuard, ExpiringPauseState {
    using SafeCast for uint256;
    using SafeCast for int256;

    // ------------------------------------------------------------------ constants

    uint256 public constant MIN_SHORT_MARGIN_FRACTION = 0.05e18;
    uint256 public constant MAX_SHORT_MARGIN_FRACTION = 1e18;
    /// @notice Time without a new margin root after which the fallback margin applies [seconds] (docs/contracts.md,
    /// "exit when keepers stop"): accounts may then close positions and withdraw what the fallback margin shows
    /// they do not need, without a keeper attestation.
    uint256 public constant FALLBACK_DELAY = 3 days;

    // ------------------------------------------------------------------ storage

    /// @notice The liquidation module (set once by the owner).
    address public liquidationModule;

    // ------------------------------------------------------------------ modifiers

    modifier onlyLiquidationModule() {
        if (msg.sender != liquidationModule || msg.sender == address(0)) revert CH_NotLiquidationModule(msg.sender);
        _;
    }

    // ------------------------------------------------------------------ constructor

    constructor(address owner_, address quoteAsset_, uint128 quoteDepositCap, uint64 shortMarginFraction_)
        KeeperSet(owner_)
        CollateralVault(quoteAsset_, quoteDepositCap)
    {
        _checkBounds("shortMarginFraction", shortMarginFraction_, MIN_SHORT_MARGIN_FRACTION, MAX_SHORT_MARGIN_FRACTION);
        _config.shortMarginFraction = shortMarginFraction_;
    }

    // ------------------------------------------------------------------ internal functions

    /// @dev Checks the quote and its series, burns the nonce; returns the series' underlying.
    function _validateQuote(Quote calldata quote, bytes calldata signature) internal returns (address) {
        if (quote.maker == msg.sender) revert CH_SelfTrade(msg.sender);
        if (quote.size == 0) revert CH_ZeroSize();
        if (block.timestamp > quote.deadline) revert CH_QuoteExpired(quote.deadline);
        Series memory s = _series[quote.seriesId];
        if (s.expiry == 0) revert CH_UnknownSeries(quote.seriesId);
        if (block.timestamp >= s.expiry) revert CH_SeriesExpired(quote.seriesId, s.expiry);
        _useQuote(quote, signature);
        return s.underlying;
    }

    function _applyTrade(Quote calldata quote, uint256 premium) internal {
        address maker = quote.maker;
        uint256 id = quote.seriesId;
        _setPosition(maker, id, _positions[maker][id] + quote.size);
        _setPosition(msg.sender, id, _positions[msg.sender][id] - quote.size);
        int256 p = quote.size > 0 ? premium.toInt256() : -premium.toInt256();
        _cash[maker] -= p;
        _cash[msg.sender] += p;
        _bumpNonce(maker);
        _bumpNonce(msg.sender);
        emit Traded(maker, msg.sender, id, quote.size, quote.price, premium, quote.nonce);
    }

    function _useQuote(Quote calldata quote, bytes calldata signature) internal {
        bytes32 digest = _hashTypedDataV4(BackstopTypes.quoteStructHash(quote));
        (address signer, ECDSA.RecoverError err,) = ECDSA.tryRecover(digest, signature);
        if (err != ECDSA.RecoverError.NoError || signer != quote.maker) revert CH_InvalidQuoteSignature(quote.maker);
        if (_nonceUsed[quote.maker][quote.nonce]) revert CH_NonceUsed(quote.maker, quote.nonce);
        _nonceUsed[quote.maker][quote.nonce] = true;
    }

    /// @dev A risk-adding leg needs headroom (equity - IM) for its premium and short margin, and a fresh attested
    /// price of the series' underlying (no account may come to hold a series the keepers do not price, review
    /// finding H-8). A reduce-only leg (toward zero without crossing it) is never blocked by the pause, but the
    /// quote's price is not bounded on chain, so an off-market price between colluding accounts could move value out
    /// of one of them and leave bad debt (review finding R-1):
    /// - a buy-back of a short pays the premium: the buyer proves equity >= premium, so equity after the trade
    ///   >= equity - premium + (short value released) >= 0;
    /// - a sale of a long gives up at most |delta| x (spot for a call, strike for a put): an account with
    ///   liabilities (a short or negative cash) proves equity + premium >= that bound unless the premium covers it;
    ///   an account without liabilities cannot go below zero and needs nothing.
    /// Once keepers have been silent for `FALLBACK_DELAY`, a reduce-only leg given an empty proof is checked after
    /// the trade against the fallback margin instead (returns true).
    /// Breached accounts never get here: `trade` refuses them (`CH_AccountInBreach`).
    function _checkLeg(
        address account,
        uint256 seriesId,
        int256 delta,
        uint256 premium,
        address underlying,
        MarginProof calldata margin
    ) internal returns (bool fallbackCheck) {
        int256 old = _positions[account][seriesId];
        if (old != 0 && (old > 0) != (delta > 0) && _abs(delta) <= _abs(old)) {
            // a buy-back at price 0 and a sale by an account without liabilities need nothing
            if (delta > 0 ? premium == 0 : !_hasLiabilities(account)) return false;
            // keepers silent and no proof given: the fallback margin after the trade decides (no price needed)
            if (margin.leaf.account == address(0) && _fallbackActive()) return true;
            if (delta > 0) {
                _requireEquity(account, margin, premium, 0);
            } else {
                Series memory s = _series[seriesId];
                uint256 bound = s.isCall ? _freshSpot(underlying) : s.strike;
                bound = _wadToQuote(Math.mulDiv(_abs(delta), bound, WAD, Math.Rounding.Ceil), Math.Rounding.Ceil);
                if (premium < bound) _requireEquity(account, margin, bound, premium);
            }
            return false;
        }
        _requireNotPaused();
        uint256 spot = _freshSpot(underlying);
        uint256 required = premium;
        if (delta < 0) {
            uint256 size = _abs(delta);
            uint256 notional = Math.mulDiv(size, spot, WAD, Math.Rounding.Ceil);
            required += _wadToQuote(
                Math.mulDiv(notional, _config.shortMarginFraction, WAD, Math.Rounding.Ceil), Math.Rounding.Ceil
            );
            // A new short is worth at least its intrinsic value: selling it below that (an off-market price between
            // colluding accounts) costs the seller the difference at once, which the fraction of spot alone does
            // not cover for an in-the-money series (review finding R-5).
            Series memory s = _series[seriesId];
            uint256 k = s.strike;
            uint256 intrinsic = s.isCall ? (spot > k ? spot - k : 0) : (k > spot ? k - spot : 0);
            if (intrinsic != 0) {
                uint256 floorValue =
                    _wadToQuote(Math.mulDiv(size, intrinsic, WAD, Math.Rounding.Ceil), Math.Rounding.Ceil);
                if (floorValue > premium) required += floorValue - premium;
            }
        }
        _requireHeadroom(account, margin, required);
    }

    /// @dev Whether keepers have been silent (no margin root) for `FALLBACK_DELAY`.
    function _fallbackActive() internal view returns (bool) {
        uint256 last = _config.lastMarginTimestamp;
        return last != 0 && block.timestamp > last + FALLBACK_DELAY;
    }

    /// @dev Reverts unless `account`'s fallback margin (computed by `ClearinghouseAdmin.fallbackMargin`, reached
    /// through this contract's own fallback) is non-negative.
    function _requireFallbackMargin(address account) internal view {
        int256 f = IClearinghouse(address(this)).fallbackMargin(account);
        if (f < 0) revert CH_FallbackMarginShort(account, f);
    }

    /// @dev Verifies the caller-supplied leaf and emits it (`recorded == false`: used, not stored) so that every
    /// attested value the contract acts on is in the logs.
    function _requireHeadroom(address account, MarginProof calldata p, uint256 required) internal {
        _verifyAccountLeaf(account, p);
        int256 headroom = p.leaf.equity - p.leaf.initial.toInt256();
        if (headroom < required.toInt256()) revert CH_InsufficientHeadroom(account, headroom, required);
        _emitLeaf(p.leaf, p.header.sequence, false);
    }

    /// @dev Reduce-only check: `equity + credit >= required` on a verified leaf (no IM, no breach or pause check).
    function _requireEquity(address account, MarginProof calldata p, uint256 required, uint256 credit) internal {
        _verifyAccountLeaf(account, p);
        if (p.leaf.equity + credit.toInt256() < required.toInt256()) {
            revert CH_InsufficientHeadroom(account, p.leaf.equity, required - credit);
        }
        _emitLeaf(p.leaf, p.header.sequence, false);
    }

    /// @dev Whether `account` owes anything: negative cash or a short position.
    function _hasLiabilities(address account) internal view returns (bool) {
        if (_cash[account] < 0) return true;
        uint256[] storage ids = _seriesOf[account];
        for (uint256 i; i < ids.length; ++i) {
            if (_positions[account][ids[i]] < 0) return true;
        }
        return false;
    }

    /// @dev Checks that `p` is `account`'s leaf for its current stateNonce, in a fresh ring root, and not older
    /// than the account's recorded attestation of the same portfolio (an account may not pick an earlier, more
    /// favourable leaf once a later one is on record).
    function _verifyAccountLeaf(address account, MarginProof calldata p) internal view {
        if (p.leaf.account != account) revert CH_MarginProofRequired(account);
        AccountState memory a = _accounts[account];
        if (p.leaf.stateNonce != a.stateNonce) revert AO_StaleMarginState(account, p.leaf.stateNonce, a.stateNonce);
        _requireOutranksRecord(p.header.timestamp, p.header.sequence, a.attestedAt);
        _verifyMarginProof(p);
    }

    function _freshSpot(address asset) internal view returns (uint256) {
        PricePoint memory p = _spot[asset];
        if (p.price == 0 || uint256(p.timestamp) + _config.maxPriceAge < block.timestamp) {
            revert CH_StalePrice(asset, p.timestamp);
        }
        return p.price;
    }
}
