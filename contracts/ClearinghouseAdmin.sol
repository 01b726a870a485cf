// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ClearinghouseBase} from "./ClearinghouseBase.sol";
import {FallbackMarginLogic} from "./libraries/FallbackMarginLogic.sol";
import {
    AccountState,
    AssetConfig,
    BackstopTypes,
    BreachRecord,
    Claim,
    Lot,
    MarginLeaf,
    Quote,
    Series,
    SolvencyIndex,
    SolvencyRecord
} from "./libraries/BackstopTypes.sol";

/// @title ClearinghouseAdmin
/// @notice The cold half of the Clearinghouse: governance (keepers, parameters, listing, series, pause),
/// settlement, the liquidation-module hook and views. Deployed once and executed only by delegatecall from
/// `Clearinghouse`'s fallback, on the Clearinghouse's storage; calling it directly touches only its own unused
/// storage.
contract ClearinghouseAdmin is ClearinghouseBase {
    using SafeCast for uint256;
    using SafeCast for int256;

    // ------------------------------------------------------------------ constructor

    /// @param owner_ Unused owner of this code contract's own storage.
    /// @param quoteAsset_ Must equal the Clearinghouse's quote asset (checked there).
    /// @param quoteDepositCap Unused (own storage).
    /// @param shortMarginFraction_ Unused (own storage).
    constructor(address owner_, address quoteAsset_, uint128 quoteDepositCap, uint64 shortMarginFraction_)
        ClearinghouseBase(owner_, quoteAsset_, quoteDepositCap, shortMarginFraction_)
    {}

    // ------------------------------------------------------------------ external functions

    /// @notice Replace the keeper set and threshold. 1 <= N <= 16, 2M > N, M <= N.
    /// @param newKeepers The new keeper addresses (no zero address, no duplicates).
    /// @param newThreshold The number of distinct keeper signatures an attestation needs.
    function setKeeperSet(address[] calldata newKeepers, uint8 newThreshold) external onlyOwner {
        uint256 n = newKeepers.length;
        if (n == 0 || n > MAX_KEEPERS) revert CH_ParameterOutOfBounds("keeperCount", n, 1, MAX_KEEPERS);
        if (newThreshold > n || 2 * uint256(newThreshold) <= n) {
            revert CH_ParameterOutOfBounds("threshold", newThreshold, n / 2 + 1, n);
        }
        uint256 old = _keepers.length;
        for (uint256 i; i < old; ++i) {
            address k = _keepers[i];
            delete _isKeeper[k];
            emit KeeperRemoved(k);
        }
        delete _keepers;
        for (uint256 i; i < n; ++i) {
            address k = newKeepers[i];
            if (k == address(0)) revert CH_ZeroAddress();
            if (_isKeeper[k]) revert KS_DuplicateKeeper(k);
            _isKeeper[k] = true;
            _keepers.push(k);
            emit KeeperAdded(k);
        }
        _config.threshold = newThreshold;
        // Margin roots signed by the previous set stop backing proofs at once (a rotation after a key
        // compromise must not leave forged roots usable for maxAttestationAge). Sequences keep increasing.
        delete _rootRing;
        emit ThresholdSet(newThreshold);
    }

    /// @notice Set how old (seconds) a signed attestation may be when submitted or used. Bounds [5, 3600].
    /// @param age The new maximum age in seconds.
    function setMaxAttestationAge(uint256 age) external onlyOwner {
        _checkBounds("maxAttestationAge", age, MIN_ATTESTATION_AGE, MAX_ATTESTATION_AGE);
        _config.maxAttestationAge = uint16(age);
        emit ParameterSet("maxAttestationAge", age);
    }

    /// @notice Set how old (seconds) a stored spot price may be when a trade or withdrawal uses it. Bounds [5, 3600].
    /// @param age The new maximum age in seconds.
    function setMaxPriceAge(uint256 age) external onlyOwner {
        _checkBounds("maxPriceAge", age, MIN_ATTESTATION_AGE, MAX_ATTESTATION_AGE);
        _config.maxPriceAge = uint16(age);
        emit ParameterSet("maxPriceAge", age);
    }

    /// @notice Set the WAD fraction of spot x size required as headroom for a new short leg. Bounds [0.05e18, 1e18].
    /// The risk admin may only raise it (tighten, at once); the owner (timelocked) may also lower it.
    /// @param fractionWad The new fraction.
    function setShortMarginFraction(uint256 fractionWad) external {
        _checkOwnerOrTightening("shortMarginFraction", _config.shortMarginFraction, fractionWad, true);
        _checkBounds("shortMarginFraction", fractionWad, MIN_SHORT_MARGIN_FRACTION, MAX_SHORT_MARGIN_FRACTION);
        _config.shortMarginFraction = uint64(fractionWad);
        emit ParameterSet("shortMarginFraction", fractionWad);
    }

    /// @notice Set the liquidation module; can be done once.
    /// @param module The module allowed to call recordClaim, primeLot, transferCash and clearBreach.
    function setLiquidationModule(address module) external onlyOwner {
        if (module == address(0)) revert CH_ZeroAddress();
        if (liquidationModule != address(0)) revert CH_LiquidationModuleAlreadySet(liquidationModule);
        liquidationModule = module;
        emit LiquidationModuleSet(module);
    }

    /// @notice Set the risk admin, who sets haircuts and deposit caps within hard bounds.
    /// @param admin The new risk admin.
    function setRiskAdmin(address admin) external onlyOwner {
        if (admin == address(0)) revert CH_ZeroAddress();
        riskAdmin = admin;
        emit RiskAdminSet(admin);
    }

    /// @notice List an ERC20 as collateral. Rejects tokens without code, with decimals() > 18 or reverting.
    /// @param token The ERC20.
    /// @param haircutWad Haircut in WAD, at most 0.9e18.
    /// @param depositCap Cap on total deposits in token base units, >= 1.
    function listCollateral(address token, uint64 haircutWad, uint128 depositCap) external onlyOwner {
        if (_assetConfig[token].listed) revert CH_AssetAlreadyListed(token);
        _list(token, _readDecimals(token), haircutWad, depositCap);
    }

    /// @notice Set a listed asset's haircut and deposit cap. The risk admin may only tighten (raise the haircut, lower
    /// the cap), which acts at once; loosening is the owner's power (a timelock in every deployment). The quote
    /// asset's haircut stays 0.
    /// @param token The listed asset.
    /// @param haircutWad Haircut in WAD, at most 0.9e18 (0 for the quote asset).
    /// @param depositCap Cap on total deposits in token base units, >= 1.
    function setCollateralParams(address token, uint64 haircutWad, uint128 depositCap) external {
        AssetConfig storage cfg = _assetConfig[token];
        if (!cfg.listed) revert CH_AssetNotListed(token);
        _checkOwnerOrTightening("haircut", cfg.haircut, haircutWad, true);
        _checkOwnerOrTightening("depositCap", cfg.depositCap, depositCap, false);
        _checkAssetParams(token, haircutWad, depositCap);
        cfg.haircut = haircutWad;
        cfg.depositCap = depositCap;
        emit CollateralParamsSet(token, haircutWad, depositCap);
    }

    /// @notice Register a cash-settled option series on `underlying`, settled in the quote asset (owner or risk
    /// admin).
    /// @param underlying The underlying asset (priced by keeper attestations).
    /// @param strike Strike in WAD, 0 < strike <= 1e36.
    /// @param expiry Expiry (unix seconds), in the future and within 730 days.
    /// @param isCall True for a call, false for a put.
    /// @return seriesId The new series id.
    function createSeries(address underlying, uint128 strike, uint64 expiry, bool isCall)
        external
        returns (uint256 seriesId)
    {
        // a new series moves no value and adds no risk by itself (no trade without a fresh attested price of its
        // underlying): the risk admin may list series without the owner's delay
        _isOwnerElseRiskAdmin();
        if (underlying == address(0)) revert CH_ZeroAddress();
        _checkBounds("strike", strike, 1, MAX_STRIKE);
        _checkBounds("expiry", expiry, block.timestamp + 1, block.timestamp + MAX_EXPIRY_HORIZON);
        seriesId = ++seriesCount;
        _series[seriesId] = Series({underlying: underlying, expiry: expiry, isCall: isCall, strike: strike});
        emit SeriesCreated(seriesId, underlying, quoteAsset, strike, expiry, isCall);
    }

    /// @notice Cancel one of the caller's quote nonces; a quote with that nonce can no longer be filled.
    /// @param nonce The nonce to burn.
    function cancelNonce(uint256 nonce) external {
        if (_nonceUsed[msg.sender][nonce]) revert CH_NonceUsed(msg.sender, nonce);
        _nonceUsed[msg.sender][nonce] = true;
        emit NonceCancelled(msg.sender, nonce);
    }

    /// @notice Settle `account`'s position in an expired series at the attested settlement price (anyone).
    /// @param account The holder.
    /// @param seriesId The expired series.
    function settle(address account, uint256 seriesId) external {
        (uint256 intrinsic,) = _intrinsic(seriesId);
        if (_positions[account][seriesId] == 0) revert CH_NoPosition(account, seriesId);
        _settle(account, seriesId, intrinsic);
    }

    /// @notice Settle many holders of one expired series; accounts without a position are skipped.
    /// @param accounts The holders.
    /// @param seriesId The expired series.
    function settleMany(address[] calldata accounts, uint256 seriesId) external {
        (uint256 intrinsic,) = _intrinsic(seriesId);
        for (uint256 i; i < accounts.length; ++i) {
            if (_positions[accounts[i]][seriesId] != 0) _settle(accounts[i], seriesId, intrinsic);
        }
    }

    /// @notice Post keeper-attested settlement prices for options expiring at `expiry`. Set once per
    /// (underlying, expiry); the observation `timestamp` must be at or after `expiry` and fresh.
    /// @param underlyings Underlying assets.
    /// @param prices WAD settlement prices, > 0.
    /// @param expiry The expiry the prices settle.
    /// @param timestamp Observation time.
    /// @param signatures >= threshold keeper signatures over `SettlementPrices(...)`.
    function postSettlementPrices(
        address[] calldata underlyings,
        uint256[] calldata prices,
        uint64 expiry,
        uint64 timestamp,
        bytes calldata signatures
    ) external {
        uint256 n = underlyings.length;
        if (n != prices.length) revert AO_LengthMismatch(n, prices.length);
        if (timestamp < expiry) revert AO_SettlementBeforeExpiry(timestamp, expiry);
        // The signed timestamp may run 15 s ahead of the chain: without this, a settlement price could be stored
        // while the series still trades, and the last seconds of trading would be at a known payoff.
        if (block.timestamp < expiry) revert AO_SettlementBeforeExpiry(uint64(block.timestamp), expiry);
        Config memory c = _config;
        _checkFresh(timestamp, c.maxAttestationAge);
        bytes32 structHash = keccak256(
            abi.encode(
                BackstopTypes.SETTLEMENT_PRICES_TYPEHASH,
                keccak256(abi.encodePacked(underlyings)),
                keccak256(abi.encodePacked(prices)),
                expiry,
                timestamp
            )
        );
        _verifySignatures(_hashTypedDataV4(structHash), signatures, c.threshold);
        for (uint256 i; i < n; ++i) {
            address u = underlyings[i];
            uint256 p = prices[i];
            if (p == 0 || p > type(uint128).max) revert AO_InvalidPrice(u, p);
            if (_settlementPrice[u][expiry] != 0) revert AO_SettlementPriceAlreadySet(u, expiry);
            _settlementPrice[u][expiry] = p;
            emit SettlementPricePosted(u, expiry, p, timestamp);
        }
    }

    /// @notice Deliver `holder`'s claim: move its share of the source's frozen book into its account (anyone may
    /// call, never paused). When the last claim on the book is settled, the book is unfrozen and cash credited to
    /// the source meanwhile joins its cash. Neither stateNonce moves: the effective books (what keepers attest and
    /// the views show) are unchanged, so attestations stay valid and a running auction on the source goes on.
    /// @param holder The claim holder.
    function settleClaim(address holder) external {
        _settleClaim(holder);
    }

    /// @notice An auction starts for `account`: its breach is now held by the auction (a healthy attestation no
    /// longer lifts it; the auction ends through cure or finish) and its ledger slot is written so that bids
    /// update a non-zero slot. Only the liquidation module.
    /// @param account The account an auction starts for.
    function primeLot(address account) external onlyLiquidationModule {
        Lot storage lot = _lots[account];
        if (!lot.inBreach) revert CH_NotInBreach(account);
        lot.inAuction = true;
        emit LotPrimed(account);
    }

    /// @notice Write `holder`'s claim slot once, ahead of its first liquidation bid, so that the bid updates a
    /// non-zero slot (5,000 gas instead of 22,100 inside the time-critical transaction). Anyone may call, for any
    /// holder, at any time (never paused); a no-op when the slot is already non-zero. The slot keeps no claim:
    /// views, margins and the holder's freedom to trade are unchanged.
    /// @param holder The future bidder whose slot is written.
    function primeClaimSlot(address holder) external {
        if (holder == address(0)) revert CH_ZeroAddress();
        Claim storage c = _claims[holder];
        if (c.source == address(0)) {
            c.source = holder; // sentinel: a non-zero source with fractionWad 0 is "no claim"
            emit ClaimSlotPrimed(holder, msg.sender);
        }
    }

    /// @notice Move `amount` of quote cash from `from` to `to` (the module checks `from` can afford it). A frozen
    /// `from` cannot pay; cash paid to a frozen `to` is held outside its frozen book. The module's own account keeps
    /// its stateNonce (it never trades or withdraws with a margin proof).
    /// @param from Payer account.
    /// @param to Receiver account.
    /// @param amount Quote base units, > 0.
    function transferCash(address from, address to, uint256 amount) external onlyLiquidationModule {
        if (amount == 0) revert CH_ZeroAmount();
        if (to == address(0)) revert CH_ZeroAddress();
        uint256 pending = _lots[from].pendingWad;
        if (pending != 0) revert CH_ClaimsPending(from, pending);
        int256 m = amount.toInt256();
        _cash[from] -= m;
        _creditCash(to, m); // a credit of quote cash moves no stateNonce (see `CollateralVault._deposit`)
        if (from != msg.sender) _bumpNonce(from);
        emit CashTransferred(from, to, m);
    }

    /// @notice Delete `account`'s breach record and unbind its book (cured, or liquidation finished); cash credited
    /// to it meanwhile joins its cash (at the last claim settlement if claims are pending).
    /// @param account The account.
    function clearBreach(address account) external onlyLiquidationModule {
        _unbind(account, _lots[account]);
    }

    // ------------------------------------------------------------------ external views

    /// @notice The EIP-712 digest of `structHash` under this contract's domain (what keepers and makers sign).
    function hashTypedData(bytes32 structHash) external view returns (bytes32) {
        return _hashTypedDataV4(structHash);
    }

    /// @notice The current keepers, in the order they were set.
    function keepers() external view returns (address[] memory) {
        return _keepers;
    }

    /// @notice Whether `account` is a registered keeper.
    function isKeeper(address account) external view returns (bool) {
        return _isKeeper[account];
    }

    /// @notice The number of keeper signatures an attestation needs.
    function threshold() external view returns (uint256) {
        return _config.threshold;
    }

    /// @notice Maximum age in seconds of a signed attestation.
    function maxAttestationAge() external view returns (uint256) {
        return _config.maxAttestationAge;
    }

    /// @notice Maximum age in seconds of a stored spot price used by trades and withdrawals.
    function maxPriceAge() external view returns (uint256) {
        return _config.maxPriceAge;
    }

    /// @notice The WAD fraction of spot x size a new short leg needs as headroom.
    function shortMarginFraction() external view returns (uint256) {
        return _config.shortMarginFraction;
    }

    /// @notice Configuration of `asset`: listed, decimals, haircut (WAD), deposit cap.
    function assetConfig(address asset) external view returns (AssetConfig memory) {
        return _assetConfig[asset];
    }

    /// @notice Effective balance of non-quote collateral `asset` of `account` (token base units): its own, less what
    /// unsettled claims on its book own (rounded down), plus its unsettled claim's share (as settlement moves it).
    function collateralOf(address account, address asset) external view returns (uint256) {
        return _effectiveCollateral(account, asset);
    }

    /// @notice Effective signed quote-asset cash of `account` (quote base units), claims counted as for
    /// `collateralOf`, plus cash credited while its book is frozen.
    function cashOf(address account) external view returns (int256) {
        return _effectiveCash(account);
    }

    /// @notice Non-quote collateral assets `account` holds a balance of, its own or through an unsettled claim.
    function collateralAssetsOf(address account) external view returns (address[] memory) {
        return _effectiveAssets(account);
    }

    /// @notice Haircut collateral value of `account` in quote base units: cash + sum of balance x spot x
    /// (1 - haircut), each term rounded down, on its effective book. Uses stored spot prices regardless of age.
    function collateralValue(address account) external view returns (int256) {
        return _collateralValue(account, false);
    }

    /// @notice As `collateralValue`, but reverts with `CH_StalePrice(asset, timestamp)` if a held asset's spot price is
    /// older than `maxPriceAge` (what a margin decision, e.g. a liquidation bidder's, must use).
    function freshCollateralValue(address account) external view returns (int256) {
        return _collateralValue(account, true);
    }

    /// @notice The series `seriesId` (underlying, expiry, isCall, strike); reverts for an unknown id.
    function series(uint256 seriesId) external view returns (Series memory s) {
        s = _series[seriesId];
        if (s.expiry == 0) revert CH_UnknownSeries(seriesId);
    }

    /// @notice Effective signed size (WAD contracts) of `account` in `seriesId`, claims counted as for
    /// `collateralOf` (shorts of a frozen book rounded up in size).
    function positionOf(address account, uint256 seriesId) external view returns (int256) {
        Claim memory c = _claims[account];
        int256 src = c.fractionWad != 0 ? _positions[c.source][seriesId] : int256(0);
        return _effective(account, _positions[account][seriesId], src, c);
    }

    /// @notice Series in which `account` holds a position, its own or through an unsettled claim.
    function seriesOf(address account) external view returns (uint256[] memory) {
        Claim memory c = _claims[account];
        if (c.fractionWad == 0) return _seriesOf[account];
        return _union(_seriesOf[account], _seriesOf[c.source]);
    }

    /// @notice `holder`'s unsettled claim: its source, the fraction of the source's frozen book, and the share of
    /// the source's stored book settlement would move now (all zero if none).
    function claimOf(address holder) external view returns (address source, uint256 fractionWad, uint256 shareWad) {
        Claim memory c = _claims[holder];
        if (c.fractionWad == 0) return (address(0), 0, 0);
        return (c.source, c.fractionWad, _storedShare(c.fractionWad, _lots[c.source].movedWad));
    }

    /// @notice The claim ledger of `account` as a liquidated book: unsettled and moved fractions of its frozen book,
    /// quote cash credited outside it, and whether the slot is primed.
    function lotOf(address account) external view returns (Lot memory) {
        return _lots[account];
    }

    /// @notice Stored (not effective) position, collateral and cash of `account`: what its own storage holds, for
    /// token-conservation audits (the effective views add or remove unsettled claims).
    function storedBalances(address account, uint256 seriesId, address asset)
        external
        view
        returns (int256 position, uint256 collateral, int256 cash)
    {
        return (_positions[account][seriesId], _collateral[account][asset], _cash[account]);
    }

    /// @notice Whether `maker`'s quote nonce is used or cancelled.
    function nonceUsed(address maker, uint256 nonce) external view returns (bool) {
        return _nonceUsed[maker][nonce];
    }

    /// @notice The EIP-712 digest a maker signs for `quote`.
    function hashQuote(Quote calldata quote) external view returns (bytes32) {
        return _hashTypedDataV4(BackstopTypes.quoteStructHash(quote));
    }

    /// @notice The latest stored spot price of `asset` (WAD) and its observation time.
    function spotPrice(address asset) external view returns (uint256 price, uint64 timestamp) {
        PricePoint memory p = _spot[asset];
        return (p.price, p.timestamp);
    }

    /// @notice The settlement price (WAD) of `underlying` for `expiry`, 0 if not yet attested.
    function settlementPrice(address underlying, uint64 expiry) external view returns (uint256) {
        return _settlementPrice[underlying][expiry];
    }

    /// @notice The breach record of `account` (`timestamp == 0`: not breached).
    function breachOf(address account) external view returns (BreachRecord memory) {
        return _breaches[account];
    }

    /// @notice Whether `account` is registered as breached.
    function isBreached(address account) external view returns (bool) {
        return _breaches[account].timestamp != 0;
    }

    /// @notice The latest solvency index the keepers signed with a margin root [quote base units], the root's
    /// `sequence` and `timestamp` [unix seconds] (`sequence == 0`: none posted yet), and the coverage
    /// `fund / shortfallEs975` [wad], rounded down (`type(uint256).max` when the shortfall at risk is 0).
    function solvencyIndex()
        external
        view
        returns (SolvencyIndex memory index, uint64 sequence, uint64 timestamp, uint256 coverageWad)
    {
        SolvencyRecord storage r = _solvency;
        uint256 es = r.shortfallEs975;
        coverageWad = es == 0 ? type(uint256).max : Math.mulDiv(r.fund, WAD, es);
        // the 13 return words straight from the five packed slots (the compiler's struct copy is ~1 kB of code)
        assembly ("memory-safe") {
            let slot := r.slot
            let p := mload(0x40)
            let m := 0xffffffffffffffffffffffffffffffff
            for { let i := 0 } lt(i, 4) { i := add(i, 1) } {
                let w := sload(add(slot, i))
                mstore(add(p, shl(6, i)), and(w, m))
                mstore(add(p, add(shl(6, i), 0x20)), shr(128, w))
            }
            // the two signed fields: totalEquity (word 0) and excludedEquity (word 7)
            mstore(p, signextend(15, mload(p)))
            mstore(add(p, 0xe0), signextend(15, mload(add(p, 0xe0))))
            let w := sload(add(slot, 4))
            mstore(add(p, 0x100), and(w, 0xffffffff))
            mstore(add(p, 0x120), and(shr(32, w), 0xffffffff))
            mstore(add(p, 0x140), and(shr(64, w), 0xffffffffffffffff))
            mstore(add(p, 0x160), and(shr(128, w), 0xffffffffffffffff))
            mstore(add(p, 0x180), coverageWad)
            return(p, 0x1a0)
        }
    }

    /// @notice The commitment kept for `sequence`'s ring slot: keccak256(abi.encode(root, inputsHash, sequence,
    /// timestamp, leafCount)) of the accepted `MarginRoot` (what a leaf's proof is checked against).
    function rootCommitment(uint64 sequence) external view returns (bytes32) {
        return _rootRing[sequence % ROOT_RING_SIZE];
    }

    /// @notice The last accepted margin root sequence and timestamp.
    function lastMarginAttestation() external view returns (uint64 sequence, uint64 timestamp) {
        return (_config.lastMarginSequence, _config.lastMarginTimestamp);
    }

    /// @notice The last accepted price sequence and timestamp.
    function lastPriceAttestation() external view returns (uint64 sequence, uint64 timestamp) {
        return (_config.lastPriceSequence, _config.lastPriceTimestamp);
    }

    /// @notice The double-hashed Merkle leaf of `leaf` (OZ StandardMerkleTree encoding).
    function leafHash(MarginLeaf calldata leaf) external pure returns (bytes32) {
        return BackstopTypes.leafHash(leaf);
    }

    /// @notice Whether keepers have been silent (no margin root) for `FALLBACK_DELAY`: the fallback margin then
    /// governs withdrawals and reduce-only trades given an empty proof.
    function fallbackActive() external view returns (bool) {
        return _fallbackActive();
    }

    /// @notice The fallback margin of `account` [quote base units], see {FallbackMarginLogic-fallbackMargin}: quote
    /// cash minus every short put's strike x size, or `type(int256).min` if a short call is not covered by its
    /// underlying held as collateral. Used once keepers have been silent for `FALLBACK_DELAY`.
    /// @param account The account.
    function fallbackMargin(address account) external view returns (int256) {
        return FallbackMarginLogic.fallbackMargin(
            _cash, _seriesOf, _positions, _series, _assetConfig, _collateral, account, _quoteUnit
        );
    }

    /// @notice Whether `holder`'s claim slot is non-zero (primed, or used by an earlier claim): its next bid pays no
    /// zero-slot write.
    function claimSlotPrimed(address holder) external view returns (bool) {
        return _claims[holder].source != address(0);
    }

    // ------------------------------------------------------------------ internal functions

    function _collateralValue(address account, bool fresh) internal view returns (int256 value) {
        value = _effectiveCash(account);
        address[] memory assets = _effectiveAssets(account);
        for (uint256 i; i < assets.length; ++i) {
            address a = assets[i];
            uint256 amount = _effectiveCollateral(account, a);
            if (amount == 0) continue;
            AssetConfig memory cfg = _assetConfig[a];
            uint256 price = fresh ? _freshSpot(a) : _spot[a].price;
            uint256 gross = _assetValue(amount, price, cfg.decimals, Math.Rounding.Floor);
            value += Math.mulDiv(gross, WAD - cfg.haircut, WAD, Math.Rounding.Floor).toInt256();
        }
    }

    /// @dev True for the owner, false for the risk admin; reverts `CH_NotOwnerOrRiskAdmin` for anyone else.
    function _isOwnerElseRiskAdmin() internal view returns (bool) {
        if (msg.sender == owner()) return true;
        if (msg.sender != riskAdmin) revert CH_NotOwnerOrRiskAdmin(msg.sender);
        return false;
    }

    /// @dev The owner may set anything within bounds; anyone else must be the risk admin and may only tighten:
    /// raise (`upIsTighter`) or lower the value.
    function _checkOwnerOrTightening(bytes32 name, uint256 current, uint256 requested, bool upIsTighter)
        internal
        view
    {
        if (_isOwnerElseRiskAdmin()) return;
        if (upIsTighter ? requested < current : requested > current) revert CH_OnlyTightening(name, current, requested);
    }

    /// @dev `a`'s own list with the entries of `b` it lacks appended.
    function _union(uint256[] memory a, uint256[] memory b) internal pure returns (uint256[] memory out) {
        out = new uint256[](a.length + b.length);
        uint256 n = a.length;
        for (uint256 i; i < n; ++i) out[i] = a[i];
        for (uint256 j; j < b.length; ++j) {
            bool seen;
            for (uint256 i; i < a.length && !seen; ++i) seen = a[i] == b[j];
            if (!seen) out[n++] = b[j];
        }
        assembly ("memory-safe") {
            mstore(out, n)
        }
    }

    /// @dev Cash credited while bound to a breach is not counted (it is neither sold nor able to cure: cures go
    /// through the liquidation module's escrow); once the breach is cleared it counts until it joins the cash.
    function _effectiveCash(address account) internal view returns (int256) {
        Claim memory c = _claims[account];
        int256 cash = _effective(account, _cash[account], c.fractionWad != 0 ? _cash[c.source] : int256(0), c);
        Lot memory lot = _lots[account];
        return lot.inBreach ? cash : cash + int256(uint256(lot.creditedCash));
    }

    function _effectiveCollateral(address account, address asset) internal view returns (uint256) {
        Claim memory c = _claims[account];
        int256 src = c.fractionWad != 0 ? int256(_collateral[c.source][asset]) : int256(0);
        return uint256(_effective(account, int256(_collateral[account][asset]), src, c));
    }

    function _effectiveAssets(address account) internal view returns (address[] memory) {
        Claim memory c = _claims[account];
        address[] memory own = _assetsOf[account];
        if (c.fractionWad == 0) return own;
        address[] memory src = _assetsOf[c.source];
        uint256[] memory a;
        uint256[] memory b;
        assembly ("memory-safe") {
            a := own
            b := src
        }
        uint256[] memory u = _union(a, b);
        address[] memory out;
        assembly ("memory-safe") {
            out := u
        }
        return out;
    }
}
