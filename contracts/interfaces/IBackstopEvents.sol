// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

/// @title IBackstopErrors
/// @notice Custom errors of the protocol core. Each names the problem and carries the values that caused it.
interface IBackstopErrors {
    // --- parameters and roles
    error ParameterOutOfBounds(bytes32 name, uint256 value, uint256 min, uint256 max);
    error ZeroAddress();
    error DuplicateKeeper(address keeper);
    error NotRiskAdmin(address caller);
    error NotLiquidationModule(address caller);
    error LiquidationModuleAlreadySet(address module);
    error LengthMismatch(uint256 a, uint256 b);

    // --- signatures and attestations
    error TooFewSignatures(uint256 provided, uint256 threshold);
    error MalformedSignatures(uint256 length);
    error SignersNotAscending(uint256 index, address signer, address previous);
    error NotAKeeper(address signer);
    error HighSSignature(uint256 index);
    error InvalidSignature(uint256 index);
    error AttestationExpired(uint64 timestamp, uint256 maxAge);
    error AttestationFromFuture(uint64 timestamp);
    error AttestationReplayed(uint64 sequence, uint64 lastSequence);
    error AttestationOlder(uint64 timestamp, uint64 lastTimestamp);
    error InvalidPrice(address asset, uint256 price);
    error SettlementBeforeExpiry(uint64 timestamp, uint64 expiry);
    error SettlementPriceAlreadySet(address underlying, uint64 expiry);

    // --- margin
    error UnknownMarginRoot(uint64 sequence);
    error StaleMarginState(address account, uint32 attested, uint32 current);
    error InsufficientHeadroom(address account, int256 headroom, uint256 required);
    error MarginProofRequired(address account);
    /// @notice `account` is bound to a recorded breach: it cannot trade, withdraw or receive non-quote collateral
    /// until the breach is cleared (auction end, cure, or a healthy attestation when no auction holds it).
    error AccountInBreach(address account);
    /// @notice Keepers have been silent for `FALLBACK_DELAY` and `account`'s fallback margin would be `margin` < 0.
    error FallbackMarginShort(address account, int256 margin);
    /// @notice The risk admin may only tighten `name` (current `current`, requested `requested`); loosening is the
    /// owner's (timelocked) power.
    error OnlyTightening(bytes32 name, uint256 current, uint256 requested);
    /// @notice `caller` is neither the owner nor the risk admin.
    error NotOwnerOrRiskAdmin(address caller);
    /// @notice `account` has no recorded breach (an auction cannot hold it).
    error NotInBreach(address account);

    // --- collateral
    error NotAContract(address token);
    error DecimalsTooLarge(address token, uint8 decimals);
    error DecimalsUnreadable(address token);
    error AssetNotListed(address asset);
    error AssetAlreadyListed(address asset);
    error DepositCapExceeded(address asset, uint256 total, uint256 cap);
    error InsufficientCollateral(address account, address asset, uint256 balance, uint256 amount);
    error InsufficientCash(address account, int256 cash, uint256 amount);
    error InsufficientLiquidity(address asset, uint256 held, uint256 amount);
    error ZeroAmount();
    error StalePrice(address asset, uint64 timestamp);
    error TooManyAssets(address account);

    // --- options
    error UnknownSeries(uint256 seriesId);
    error SeriesExpired(uint256 seriesId, uint64 expiry);
    error SeriesNotExpired(uint256 seriesId, uint64 expiry);
    error SettlementPriceMissing(address underlying, uint64 expiry);
    error QuoteExpired(uint64 deadline);
    error NonceUsed(address maker, uint256 nonce);
    error InvalidQuoteSignature(address maker);
    error SelfTrade(address account);
    error ZeroSize();
    error TooManyPositions(address account);
    error NoPosition(address account, uint256 seriesId);
    error InvalidFraction(uint256 fractionWad);
    /// @notice `account`'s book is frozen by `pendingWad` of unsettled liquidation claims: settle them first.
    error ClaimsPending(address account, uint256 pendingWad);
    /// @notice `holder` still holds an unsettled claim of `fractionWad` on `source`'s book: settle it first.
    error ClaimUnsettled(address holder, address source, uint256 fractionWad);
    /// @notice `holder` has no unsettled claim.
    error NoClaim(address holder);
    /// @notice Nothing of `source`'s book is left to claim.
    error NothingToClaim(address source);
}

/// @title IBackstopEvents
/// @notice Events of the protocol core: every state change and every attested value is emitted.
interface IBackstopEvents {
    event KeeperAdded(address indexed keeper);
    event KeeperRemoved(address indexed keeper);
    event ThresholdSet(uint8 threshold);
    event ParameterSet(bytes32 indexed name, uint256 value);
    event RiskAdminSet(address indexed admin);
    event LiquidationModuleSet(address indexed module);

    event PricesPosted(uint64 indexed sequence, uint64 timestamp, address[] assets, uint256[] prices);
    event SettlementPricePosted(address indexed underlying, uint64 indexed expiry, uint256 price, uint64 timestamp);
    event MarginRootPosted(uint64 sequence, bytes32 root, bytes32 inputsHash, uint64 timestamp, uint32 leafCount);
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
    event BreachCleared(address indexed account);

    event CollateralListed(address indexed asset, uint8 decimals, uint64 haircut, uint128 depositCap);
    event CollateralParamsSet(address indexed asset, uint64 haircut, uint128 depositCap);
    event Deposited(address indexed account, address indexed asset, uint256 amount, address payer);
    event Withdrawn(address indexed account, address indexed asset, uint256 amount);

    event SeriesCreated(
        uint256 indexed seriesId, address indexed underlying, address quoteAsset, uint128 strike, uint64 expiry, bool isCall
    );
    event Traded(
        address indexed maker,
        address indexed taker,
        uint256 indexed seriesId,
        int256 makerSize,
        uint256 price,
        uint256 premium,
        uint256 nonce
    );
    event NonceCancelled(address indexed maker, uint256 nonce);
    event Settled(address indexed account, uint256 indexed seriesId, int256 size, int256 cashDelta);

    event PortfolioShareTransferred(address indexed from, address indexed to, uint256 fractionWad);
    event PositionTransferred(address indexed from, address indexed to, uint256 indexed seriesId, int256 size);
    event CollateralTransferred(address indexed from, address indexed to, address indexed asset, uint256 amount);
    event CashTransferred(address indexed from, address indexed to, int256 amount);
    /// @notice A liquidation bid: `holder` now owns `claimWad` of `source`'s frozen book (`shareWad` of what was left
    /// of its effective book) and paid `payment` quote cash to the liquidation module (negative: was paid by it).
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
    /// Position/Collateral/CashTransferred events before it); `creditedCashReleased` joined the source's cash.
    event ClaimSettled(
        address indexed source,
        address indexed holder,
        uint256 claimWad,
        uint256 shareOfStoredWad,
        uint256 creditedCashReleased
    );
    /// @notice The account's claim ledger slot was primed (an auction started for it).
    event LotPrimed(address indexed account);
    /// @notice `holder`'s claim slot was primed by `by` (paid once, before its first bid, so that no bid writes a
    /// zero slot).
    event ClaimSlotPrimed(address indexed holder, address indexed by);
}
