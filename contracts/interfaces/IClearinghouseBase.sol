// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IAttestationOracle} from "./IAttestationOracle.sol";
import {IExpiringPause} from "./IExpiringPause.sol";

/// @title IClearinghouseBase
/// @notice Errors and events of {ClearinghouseBase} and the parts it is built from below the attestation oracle
/// ({CollateralVault}, {OptionBook}, {LiquidationClaims}): collateral, option book, margin checks, breach binding,
/// liquidation claims and governance bounds (prefix `CH_`). Both halves of the Clearinghouse ({Clearinghouse} and
/// {ClearinghouseAdmin}) inherit it; {IClearinghouse} adds their external functions.
interface IClearinghouseBase is IAttestationOracle, IExpiringPause {
    // ------------------------------------------------------------------ events

    /// @notice Governance parameter `name` set to `value` (units as its setter documents).
    event ParameterSet(bytes32 indexed name, uint256 value);
    /// @notice The risk admin (tightens haircuts and caps, lists series) is now `admin`.
    event RiskAdminSet(address indexed admin);
    /// @notice The liquidation module (set once) is `module`.
    event LiquidationModuleSet(address indexed module);
    /// @notice `asset` listed as collateral: `haircut` [wad], `depositCap` [token base units].
    event CollateralListed(address indexed asset, uint8 decimals, uint64 haircut, uint128 depositCap);
    /// @notice `asset`'s haircut [wad] and deposit cap [token base units] changed.
    event CollateralParamsSet(address indexed asset, uint64 haircut, uint128 depositCap);
    /// @notice `payer` deposited `amount` [token base units] of `asset` for `account`.
    event Deposited(address indexed account, address indexed asset, uint256 amount, address payer);
    /// @notice `account` withdrew `amount` [token base units] of `asset`.
    event Withdrawn(address indexed account, address indexed asset, uint256 amount);
    /// @notice Series `seriesId` registered: `strike` [wad], `expiry` [unix seconds].
    event SeriesCreated(
        uint256 indexed seriesId, address indexed underlying, address quoteAsset, uint128 strike, uint64 expiry, bool isCall
    );
    /// @notice A quote was filled: `makerSize` [wad contracts] (> 0: the maker bought), `price` [wad quote units per
    /// contract], `premium` [quote base units].
    event Traded(
        address indexed maker,
        address indexed taker,
        uint256 indexed seriesId,
        int256 makerSize,
        uint256 price,
        uint256 premium,
        uint256 nonce
    );
    /// @notice `maker` cancelled quote nonce `nonce`.
    event NonceCancelled(address indexed maker, uint256 nonce);
    /// @notice `account`'s position of `size` [wad contracts] in an expired series settled for `cashDelta` [quote base
    /// units].
    event Settled(address indexed account, uint256 indexed seriesId, int256 size, int256 cashDelta);
    /// @notice `fractionWad` [wad] of `from`'s stored book moved to `to` (a claim delivery).
    event PortfolioShareTransferred(address indexed from, address indexed to, uint256 fractionWad);
    /// @notice `size` [wad contracts] of series `seriesId` moved from `from` to `to`.
    event PositionTransferred(address indexed from, address indexed to, uint256 indexed seriesId, int256 size);
    /// @notice `amount` [token base units] of `asset` moved from `from` to `to`.
    event CollateralTransferred(address indexed from, address indexed to, address indexed asset, uint256 amount);
    /// @notice `amount` [quote base units] of quote cash moved from `from` to `to`.
    event CashTransferred(address indexed from, address indexed to, int256 amount);
    /// @notice A liquidation bid: `holder` now owns `claimWad` of `source`'s frozen book (`shareWad` of what was left
    /// of its effective book) and paid `payment` [quote base units] to the liquidation module (negative: was paid by
    /// it).
    event ClaimRecorded(
        address indexed source,
        address indexed holder,
        uint256 shareWad,
        uint256 claimWad,
        uint256 pendingWad,
        uint256 movedWad,
        int256 payment
    );
    /// @notice A claim was delivered: `shareOfStoredWad` of `source`'s stored book moved to `holder` (see the
    /// Position/Collateral/CashTransferred events before it); `creditedCashReleased` [quote base units] joined the
    /// source's cash.
    event ClaimSettled(
        address indexed source,
        address indexed holder,
        uint256 claimWad,
        uint256 shareOfStoredWad,
        uint256 creditedCashReleased
    );
    /// @notice An auction started for `account`: its breach is now held by the auction.
    event LotPrimed(address indexed account);
    /// @notice `holder`'s claim slot was primed by `by` (paid once, before its first bid, so that no bid writes a
    /// zero slot).
    event ClaimSlotPrimed(address indexed holder, address indexed by);

    // ------------------------------------------------------------------ errors

    /// @notice Parameter `name` = `value` is outside [`min`, `max`].
    error CH_ParameterOutOfBounds(bytes32 name, uint256 value, uint256 min, uint256 max);
    /// @notice The zero address where an account, token or role is needed.
    error CH_ZeroAddress();
    /// @notice `caller` is not the liquidation module.
    error CH_NotLiquidationModule(address caller);
    /// @notice The liquidation module is set once; it is `module`.
    error CH_LiquidationModuleAlreadySet(address module);
    /// @notice The risk admin may only tighten `name` (current `current`, requested `requested`); loosening is the
    /// owner's (timelocked) power.
    error CH_OnlyTightening(bytes32 name, uint256 current, uint256 requested);
    /// @notice `caller` is neither the owner nor the risk admin.
    error CH_NotOwnerOrRiskAdmin(address caller);
    /// @notice `admin` has no code or was built for another quote asset.
    error CH_AdminMismatch(address admin);
    /// @notice `account`'s attested `headroom` (equity - IM, or equity for a reduce-only leg) [quote base units] is
    /// below `required`.
    error CH_InsufficientHeadroom(address account, int256 headroom, uint256 required);
    /// @notice `account` must bring a margin proof of its own leaf (the empty proof is not enough here).
    error CH_MarginProofRequired(address account);
    /// @notice `account` is bound to a recorded breach: it cannot trade, withdraw or receive non-quote collateral
    /// until the breach is cleared (auction end, cure, or a healthy attestation when no auction holds it).
    error CH_AccountInBreach(address account);
    /// @notice Keepers have been silent for `FALLBACK_DELAY` and `account`'s fallback margin would be `margin` < 0.
    error CH_FallbackMarginShort(address account, int256 margin);
    /// @notice `account` has no recorded breach (an auction cannot hold it).
    error CH_NotInBreach(address account);
    /// @notice The spot price of `asset`, observed at `timestamp`, is missing or older than `maxPriceAge`.
    error CH_StalePrice(address asset, uint64 timestamp);
    /// @notice `token` has no code.
    error CH_NotAContract(address token);
    /// @notice `token` has `decimals` > 18.
    error CH_DecimalsTooLarge(address token, uint8 decimals);
    /// @notice `token`'s `decimals()` reverts.
    error CH_DecimalsUnreadable(address token);
    /// @notice `asset` is not listed as collateral.
    error CH_AssetNotListed(address asset);
    /// @notice `asset` is listed already.
    error CH_AssetAlreadyListed(address asset);
    /// @notice Deposits of `asset` would reach `total` > `cap` [token base units].
    error CH_DepositCapExceeded(address asset, uint256 total, uint256 cap);
    /// @notice `account` holds `balance` < `amount` of `asset` [token base units].
    error CH_InsufficientCollateral(address account, address asset, uint256 balance, uint256 amount);
    /// @notice `account`'s quote cash `cash` < `amount` [quote base units].
    error CH_InsufficientCash(address account, int256 cash, uint256 amount);
    /// @notice The contract holds `held` < `amount` of `asset` (quote cash owed by accounts with negative cash).
    error CH_InsufficientLiquidity(address asset, uint256 held, uint256 amount);
    /// @notice A zero amount.
    error CH_ZeroAmount();
    /// @notice `account` already holds `MAX_ASSETS_PER_ACCOUNT` collateral assets.
    error CH_TooManyAssets(address account);
    /// @notice No series `seriesId`.
    error CH_UnknownSeries(uint256 seriesId);
    /// @notice Series `seriesId` expired at `expiry`: it no longer trades.
    error CH_SeriesExpired(uint256 seriesId, uint64 expiry);
    /// @notice Series `seriesId` expires at `expiry`: it cannot settle yet.
    error CH_SeriesNotExpired(uint256 seriesId, uint64 expiry);
    /// @notice No settlement price of `underlying` for `expiry` yet.
    error CH_SettlementPriceMissing(address underlying, uint64 expiry);
    /// @notice The quote's `deadline` passed.
    error CH_QuoteExpired(uint64 deadline);
    /// @notice `maker`'s quote nonce `nonce` is used or cancelled.
    error CH_NonceUsed(address maker, uint256 nonce);
    /// @notice The quote's signature does not recover `maker`.
    error CH_InvalidQuoteSignature(address maker);
    /// @notice `account` on both sides (a trade with itself, or a claim on its own book).
    error CH_SelfTrade(address account);
    /// @notice A quote of size zero.
    error CH_ZeroSize();
    /// @notice `account` already holds `MAX_POSITIONS_PER_ACCOUNT` positions.
    error CH_TooManyPositions(address account);
    /// @notice `account` holds no position in `seriesId`.
    error CH_NoPosition(address account, uint256 seriesId);
    /// @notice A claim share `fractionWad` outside (0, 1e18].
    error CH_InvalidFraction(uint256 fractionWad);
    /// @notice `account`'s book is frozen by `pendingWad` of unsettled liquidation claims: settle them first.
    error CH_ClaimsPending(address account, uint256 pendingWad);
    /// @notice `holder` still holds an unsettled claim of `fractionWad` on `source`'s book: settle it first.
    error CH_ClaimUnsettled(address holder, address source, uint256 fractionWad);
    /// @notice `holder` has no unsettled claim.
    error CH_NoClaim(address holder);
    /// @notice Nothing of `source`'s book is left to claim.
    error CH_NothingToClaim(address source);
}
