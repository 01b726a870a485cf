// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IClearinghouseBase} from "./IClearinghouseBase.sol";
import {
    AssetConfig,
    BreachRecord,
    Lot,
    MarginLeaf,
    MarginProof,
    MarginRootHeader,
    Quote,
    Series,
    SolvencyIndex
} from "../libraries/BackstopTypes.sol";

/// @title IClearinghouse
/// @notice The whole external API of a Backstop Clearinghouse address: the functions of {Clearinghouse} (hot paths)
/// and of {ClearinghouseAdmin} (everything else, reached through the Clearinghouse's fallback by delegatecall), every
/// event and error either half can emit (the protocol's own, prefixed `KS_`, `AO_`, `CH_`, `EP_`, and those of the
/// OpenZeppelin code it is built on). This is the one ABI clients load (`keeper.chain.load_abi("clearinghouse")`).
/// @dev Neither half implements it alone, so the compiler cannot check it: `tests/contracts/test_selectors.py` does,
/// on the compiled artifacts (this interface's functions are exactly the union of both halves', events and errors
/// likewise, and the two halves share no selector outside the code they both inherit).
interface IClearinghouse is IClearinghouseBase {
    // ------------------------------------------------------------------ events

    /// @notice `Ownable2Step`: `newOwner` may accept ownership.
    event OwnershipTransferStarted(address indexed previousOwner, address indexed newOwner);
    /// @notice `Ownable`: ownership moved.
    event OwnershipTransferred(address indexed previousOwner, address indexed newOwner);
    /// @notice `EIP712` (ERC-5267): the domain changed (never emitted: the domain is fixed).
    event EIP712DomainChanged();

    // ------------------------------------------------------------------ errors

    /// @notice `Ownable`: `account` is not the owner.
    error OwnableUnauthorizedAccount(address account);
    /// @notice `Ownable`: `owner` cannot own the contract.
    error OwnableInvalidOwner(address owner);
    /// @notice `ReentrancyGuard`: a guarded function was re-entered.
    error ReentrancyGuardReentrantCall();
    /// @notice `SafeERC20`: the token call to `token` failed.
    error SafeERC20FailedOperation(address token);
    /// @notice `SafeCast`: `value` does not fit `bits` bits.
    error SafeCastOverflowedUintDowncast(uint8 bits, uint256 value);
    /// @notice `SafeCast`: `value` does not fit `bits` bits.
    error SafeCastOverflowedIntDowncast(uint8 bits, int256 value);
    /// @notice `SafeCast`: `value` does not fit an int256.
    error SafeCastOverflowedUintToInt(uint256 value);
    /// @notice `MerkleProof`: a multiproof whose lengths do not match.
    error MerkleProofInvalidMultiproof();
    /// @notice `ShortStrings` (EIP712 constructor): `str` is too long.
    error StringTooLong(string str);
    /// @notice `ShortStrings` (EIP712 constructor).
    error InvalidShortString();

    // ------------------------------------------------------------------ external functions

    // attestations (keepers)
    /// @notice Post keeper-attested spot prices (WAD, quote units per whole asset unit).
    function postPrices(
        address[] calldata assets,
        uint256[] calldata prices,
        uint64 sequence,
        uint64 timestamp,
        bytes calldata signatures
    ) external;

    /// @notice Post a keeper-signed margin root without leaves; accounts are recorded later with proofs. The signed
    /// `MarginRoot` carries `solvencyHash`; `solvency` must hash to it (`AO_SolvencyIndexMismatch`) and is stored as
    /// the latest solvency index.
    function postMarginRoot(
        bytes32 root,
        MarginRootHeader calldata header,
        bytes32 solvencyHash,
        SolvencyIndex calldata solvency,
        bytes calldata signatures
    ) external;

    /// @notice Post a keeper-signed margin batch: the root is rebuilt from `leaves` by multiproof, the signatures
    /// are checked on it, and every leaf whose stateNonce is current is recorded (breaches registered). The solvency
    /// index is required as in `postMarginRoot`.
    function postMarginBatch(
        MarginRootHeader calldata header,
        bytes32 solvencyHash,
        SolvencyIndex calldata solvency,
        MarginLeaf[] calldata leaves,
        bytes32[] calldata proof,
        bool[] calldata proofFlags,
        bytes calldata signatures
    ) external;

    /// @notice Record one account's leaf of a margin root still held in the ring (anyone may call), e.g. to
    /// register a breach after a root-only post. Reverts if the leaf is stale or older than the account's record.
    function recordMargin(MarginProof calldata p) external;

    /// @notice Post keeper-attested settlement prices for options expiring at `expiry`. Set once per (underlying,
    /// expiry); the observation `timestamp` must be at or after `expiry` and fresh.
    function postSettlementPrices(
        address[] calldata underlyings,
        uint256[] calldata prices,
        uint64 expiry,
        uint64 timestamp,
        bytes calldata signatures
    ) external;

    // collateral
    /// @notice Deposit `amount` of listed `asset` for the caller. Never paused, never needs an attestation.
    function deposit(address asset, uint256 amount) external;

    /// @notice Withdraw `amount` of `asset`. An account with no open positions and non-negative cash passes an
    /// empty proof; otherwise `margin` must be a fresh leaf for the caller's current stateNonce with equity -
    /// initial >= amount x spot (quote units, rounded up, no haircut credit). Once keepers have been silent for
    /// `FALLBACK_DELAY`, an empty proof is accepted when the fallback margin after the withdrawal is >= 0.
    /// Refused while the account is bound to a breach (`AccountInBreach`).
    function withdraw(address asset, uint256 amount, MarginProof calldata margin) external;

    // trading and settlement
    /// @notice Fill a maker's signed quote in full; the caller is the taker. The buyer pays the premium (|size| x
    /// price, rounded up) in quote cash. A leg that is not reduce-only needs a margin proof with equity - initial
    /// >= premium (buyer) or premium + shortMarginFraction x spot x |size| (seller).
    function trade(
        Quote calldata quote,
        bytes calldata makerSignature,
        MarginProof calldata makerMargin,
        MarginProof calldata takerMargin
    ) external;

    /// @notice Cancel one of the caller's quote nonces; a quote with that nonce can no longer be filled.
    function cancelNonce(uint256 nonce) external;

    /// @notice Settle `account`'s position in an expired series at the attested settlement price (anyone).
    function settle(address account, uint256 seriesId) external;

    /// @notice Settle many holders of one expired series; accounts without a position are skipped.
    function settleMany(address[] calldata accounts, uint256 seriesId) external;

    // liquidation: module hooks and claim delivery
    /// @notice Liquidation bid: `holder` acquires a claim on `shareWad` of what is left of `source`'s effective
    /// book (frozen until the claim is settled with `settleClaim`), and pays `payment` quote cash to the module.
    /// Only the liquidation module. Bumps both stateNonces.
    function recordClaim(address source, address holder, uint256 shareWad, int256 payment)
        external
        returns (uint32 sourceNonce);

    /// @notice An auction starts for `account`: its breach is now held by the auction (a healthy attestation no
    /// longer lifts it; the auction ends through cure or finish) and its ledger slot is written so that bids
    /// update a non-zero slot. Only the liquidation module.
    function primeLot(address account) external;

    /// @notice Move `amount` of quote cash from `from` to `to` (the module checks `from` can afford it). A frozen
    /// `from` cannot pay; cash paid to a frozen `to` is held outside its frozen book. The module's own account
    /// keeps its stateNonce (it never trades or withdraws with a margin proof).
    function transferCash(address from, address to, uint256 amount) external;

    /// @notice Delete `account`'s breach record and unbind its book (cured, or liquidation finished); cash
    /// credited to it meanwhile joins its cash (at the last claim settlement if claims are pending).
    function clearBreach(address account) external;

    /// @notice Deliver `holder`'s claim: move its share of the source's frozen book into its account (anyone may
    /// call, never paused). When the last claim on the book is settled, the book is unfrozen and cash credited to
    /// the source meanwhile joins its cash. Neither stateNonce moves: the effective books (what keepers attest
    /// and the views show) are unchanged, so attestations stay valid and a running auction on the source goes on.
    function settleClaim(address holder) external;

    /// @notice Write `holder`'s claim slot once, ahead of its first liquidation bid, so that the bid updates a
    /// non-zero slot (5,000 gas instead of 22,100 inside the time-critical transaction). Anyone may call, for any
    /// holder, at any time (never paused); a no-op when the slot is already non-zero. The slot keeps no claim:
    /// views, margins and the holder's freedom to trade are unchanged.
    function primeClaimSlot(address holder) external;

    // governance: owner (the timelock), risk admin, guardian
    /// @notice Replace the keeper set and threshold. 1 <= N <= 16, 2M > N, M <= N.
    function setKeeperSet(address[] calldata newKeepers, uint8 newThreshold) external;

    /// @notice Set how old (seconds) a signed attestation may be when submitted or used. Bounds [5, 3600].
    function setMaxAttestationAge(uint256 age) external;

    /// @notice Set how old (seconds) a stored spot price may be when a trade or withdrawal uses it. Bounds [5,
    /// 3600].
    function setMaxPriceAge(uint256 age) external;

    /// @notice Set the WAD fraction of spot x size required as headroom for a new short leg. Bounds [0.05e18,
    /// 1e18]. The risk admin may only raise it (tighten, at once); the owner (timelocked) may also lower it.
    function setShortMarginFraction(uint256 fractionWad) external;

    /// @notice Set the risk admin, who sets haircuts and deposit caps within hard bounds.
    function setRiskAdmin(address admin) external;

    /// @notice Set the liquidation module; can be done once.
    function setLiquidationModule(address module) external;

    /// @notice List an ERC20 as collateral. Rejects tokens without code, with decimals() > 18 or reverting.
    function listCollateral(address token, uint64 haircutWad, uint128 depositCap) external;

    /// @notice Set a listed asset's haircut and deposit cap. The risk admin may only tighten (raise the haircut,
    /// lower the cap), which acts at once; loosening is the owner's power (a timelock in every deployment). The
    /// quote asset's haircut stays 0.
    function setCollateralParams(address token, uint64 haircutWad, uint128 depositCap) external;

    /// @notice Register a cash-settled option series on `underlying`, settled in the quote asset (owner or risk
    /// admin).
    function createSeries(address underlying, uint128 strike, uint64 expiry, bool isCall)
        external
        returns (uint256 seriesId);

    /// @notice Pauses for `PAUSE_DURATION` (guardian or owner), unless paused already or within the cooldown
    /// after the previous pause.
    function pause() external;

    /// @notice Lifts the pause early (guardian or owner). The cooldown then runs from now.
    function unpause() external;

    /// @notice Sets the guardian (owner only: a timelocked change). `address(0)` leaves pausing to the owner.
    function setGuardian(address newGuardian) external;

    function transferOwnership(address newOwner) external;

    function acceptOwnership() external;

    function renounceOwnership() external;

    // ------------------------------------------------------------------ external views

    // constants
    function MAX_KEEPERS() external view returns (uint256);

    function MIN_ATTESTATION_AGE() external view returns (uint256);

    function MAX_ATTESTATION_AGE() external view returns (uint256);

    function MAX_FUTURE_SKEW() external view returns (uint256);

    /// @notice Number of margin root commitments kept; `ring[sequence % ROOT_RING_SIZE]`.
    function ROOT_RING_SIZE() external view returns (uint256);

    function MAX_HAIRCUT() external view returns (uint256);

    function MAX_DECIMALS() external view returns (uint8);

    function MAX_ASSETS_PER_ACCOUNT() external view returns (uint256);

    function MAX_POSITIONS_PER_ACCOUNT() external view returns (uint256);

    function MAX_EXPIRY_HORIZON() external view returns (uint256);

    function MAX_STRIKE() external view returns (uint256);

    function MIN_SHORT_MARGIN_FRACTION() external view returns (uint256);

    function MAX_SHORT_MARGIN_FRACTION() external view returns (uint256);

    /// @notice Time without a new margin root after which the fallback margin applies [seconds]
    /// (docs/contracts.md, "exit when keepers stop"): accounts may then close positions and withdraw what the
    /// fallback margin shows they do not need, without a keeper attestation.
    function FALLBACK_DELAY() external view returns (uint256);

    /// @notice How long a pause lasts [seconds].
    function PAUSE_DURATION() external view returns (uint256);

    /// @notice How long after a pause ends before the next one may start [seconds].
    function PAUSE_COOLDOWN() external view returns (uint256);

    // roles and configuration
    /// @notice The `ClearinghouseAdmin` code this contract delegates its cold functions to.
    function admin() external view returns (address);

    function owner() external view returns (address);

    function pendingOwner() external view returns (address);

    function riskAdmin() external view returns (address);

    /// @notice The key that may pause (besides the owner).
    function guardian() external view returns (address);

    /// @notice The liquidation module (set once by the owner).
    function liquidationModule() external view returns (address);

    /// @notice The deployment's quote asset: all values (equity, margins, premiums, cash) are in its base units.
    function quoteAsset() external view returns (address);

    /// @notice Whether the contract is paused now.
    function paused() external view returns (bool);

    /// @notice End of the current pause [unix seconds]; the contract is paused while `block.timestamp <
    /// pausedUntil`.
    function pausedUntil() external view returns (uint64);

    /// @notice The current keepers, in the order they were set.
    function keepers() external view returns (address[] memory);

    /// @notice Whether `account` is a registered keeper.
    function isKeeper(address account) external view returns (bool);

    /// @notice The number of keeper signatures an attestation needs.
    function threshold() external view returns (uint256);

    /// @notice Maximum age in seconds of a signed attestation.
    function maxAttestationAge() external view returns (uint256);

    /// @notice Maximum age in seconds of a stored spot price used by trades and withdrawals.
    function maxPriceAge() external view returns (uint256);

    /// @notice The WAD fraction of spot x size a new short leg needs as headroom.
    function shortMarginFraction() external view returns (uint256);

    /// @notice Configuration of `asset`: listed, decimals, haircut (WAD), deposit cap.
    function assetConfig(address asset) external view returns (AssetConfig memory);

    function eip712Domain()
        external view
        returns (
            bytes1 fields,
            string memory name,
            string memory version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        );

    // attestations and margin records
    /// @notice The EIP-712 digest of `structHash` under this contract's domain (what keepers and makers sign).
    function hashTypedData(bytes32 structHash) external view returns (bytes32);

    /// @notice The EIP-712 digest a maker signs for `quote`.
    function hashQuote(Quote calldata quote) external view returns (bytes32);

    /// @notice The double-hashed Merkle leaf of `leaf` (OZ StandardMerkleTree encoding).
    function leafHash(MarginLeaf calldata leaf) external pure returns (bytes32);

    /// @notice The latest stored spot price of `asset` (WAD) and its observation time.
    function spotPrice(address asset) external view returns (uint256 price, uint64 timestamp);

    /// @notice The settlement price (WAD) of `underlying` for `expiry`, 0 if not yet attested.
    function settlementPrice(address underlying, uint64 expiry) external view returns (uint256);

    /// @notice The commitment kept for `sequence`'s ring slot: keccak256(abi.encode(root, inputsHash, sequence,
    /// timestamp, leafCount)) of the accepted `MarginRoot` (what a leaf's proof is checked against).
    function rootCommitment(uint64 sequence) external view returns (bytes32);

    /// @notice The latest solvency index the keepers signed with a margin root [quote base units], the root's
    /// `sequence` and `timestamp` (`sequence == 0`: none yet), and the coverage fund / shortfallEs975 [wad], rounded
    /// down (`type(uint256).max` when the shortfall at risk is 0).
    function solvencyIndex()
        external
        view
        returns (SolvencyIndex memory index, uint64 sequence, uint64 timestamp, uint256 coverageWad);

    /// @notice The last accepted margin root sequence and timestamp.
    function lastMarginAttestation() external view returns (uint64 sequence, uint64 timestamp);

    /// @notice The last accepted price sequence and timestamp.
    function lastPriceAttestation() external view returns (uint64 sequence, uint64 timestamp);

    /// @notice The account's current stateNonce (increments on every change of its positions or collateral).
    function stateNonce(address account) external view returns (uint32);

    /// @notice The account's record: last recorded equity and maintenance margin, current stateNonce, and the
    /// root timestamp of the record (0 if the portfolio changed since: the record is stale).
    function marginRecord(address account)
        external view
        returns (int256 equity, uint256 maintenance, uint32 stateNonce_, uint32 attestedAt);

    /// @notice The breach record of `account` (`timestamp == 0`: not breached).
    function breachOf(address account) external view returns (BreachRecord memory);

    /// @notice Whether `account` is registered as breached.
    function isBreached(address account) external view returns (bool);

    /// @notice Whether keepers have been silent (no margin root) for `FALLBACK_DELAY`: the fallback margin then
    /// governs withdrawals and reduce-only trades given an empty proof.
    function fallbackActive() external view returns (bool);

    /// @notice The fallback margin of `account` [quote base units], see {FallbackMarginLogic-fallbackMargin}:
    /// quote cash minus every short put's strike x size, or `type(int256).min` if a short call is not covered by
    /// its underlying held as collateral. Used once keepers have been silent for `FALLBACK_DELAY`.
    function fallbackMargin(address account) external view returns (int256);

    // accounts (effective books)
    /// @notice Effective balance of non-quote collateral `asset` of `account` (token base units): its own, less
    /// what unsettled claims on its book own (rounded down), plus its unsettled claim's share (as settlement
    /// moves it).
    function collateralOf(address account, address asset) external view returns (uint256);

    /// @notice Effective signed quote-asset cash of `account` (quote base units), claims counted as for
    /// `collateralOf`, plus cash credited while its book is frozen.
    function cashOf(address account) external view returns (int256);

    /// @notice Non-quote collateral assets `account` holds a balance of, its own or through an unsettled claim.
    function collateralAssetsOf(address account) external view returns (address[] memory);

    /// @notice Haircut collateral value of `account` in quote base units: cash + sum of balance x spot x (1 -
    /// haircut), each term rounded down, on its effective book. Uses stored spot prices regardless of age.
    function collateralValue(address account) external view returns (int256);

    /// @notice As `collateralValue`, but reverts with `StalePrice(asset, timestamp)` if a held asset's spot price
    /// is older than `maxPriceAge` (what a margin decision, e.g. a liquidation bidder's, must use).
    function freshCollateralValue(address account) external view returns (int256);

    /// @notice Effective signed size (WAD contracts) of `account` in `seriesId`, claims counted as for
    /// `collateralOf` (shorts of a frozen book rounded up in size).
    function positionOf(address account, uint256 seriesId) external view returns (int256);

    /// @notice Series in which `account` holds a position, its own or through an unsettled claim.
    function seriesOf(address account) external view returns (uint256[] memory);

    /// @notice Stored (not effective) position, collateral and cash of `account`: what its own storage holds, for
    /// token-conservation audits (the effective views add or remove unsettled claims).
    function storedBalances(address account, uint256 seriesId, address asset)
        external view
        returns (int256 position, uint256 collateral, int256 cash);

    function totalDeposits(address asset) external view returns (uint256);

    /// @notice Sum over accounts of settlement rounding (long payouts round down, short payments round up): token
    /// balance of the quote asset == sum of cash + settlementReserve.
    function settlementReserve() external view returns (int256);

    // series, nonces and claims
    /// @notice Number of series created; ids are 1..seriesCount.
    function seriesCount() external view returns (uint256);

    /// @notice The series `seriesId` (underlying, expiry, isCall, strike); reverts for an unknown id.
    function series(uint256 seriesId) external view returns (Series memory s);

    /// @notice Whether `maker`'s quote nonce is used or cancelled.
    function nonceUsed(address maker, uint256 nonce) external view returns (bool);

    /// @notice `holder`'s unsettled claim: its source, the fraction of the source's frozen book, and the share of
    /// the source's stored book settlement would move now (all zero if none).
    function claimOf(address holder) external view returns (address source, uint256 fractionWad, uint256 shareWad);

    /// @notice The claim ledger of `account` as a liquidated book: unsettled and moved fractions of its frozen
    /// book, quote cash credited outside it, and whether the slot is primed.
    function lotOf(address account) external view returns (Lot memory);

    /// @notice Whether `holder`'s claim slot is non-zero (primed, or used by an earlier claim): its next bid pays
    /// no zero-slot write.
    function claimSlotPrimed(address holder) external view returns (bool);
}
