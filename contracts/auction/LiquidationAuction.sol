// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Ownable} from "@openzeppelin/contracts/access/Ownable.sol";
import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ReentrancyGuard} from "@openzeppelin/contracts/utils/ReentrancyGuard.sol";

import {AuctionCurves} from "./AuctionCurves.sol";
import {AuctionLogic} from "./AuctionLogic.sol";
import {InsuranceFund} from "./InsuranceFund.sol";
import {IInsuranceFund} from "./interfaces/IInsuranceFund.sol";
import {ILiquidationAuction} from "./interfaces/ILiquidationAuction.sol";
import {IClearinghouse} from "../interfaces/IClearinghouse.sol";
import {BreachRecord} from "../libraries/BackstopTypes.sol";
import {ExpiringPause} from "../governance/ExpiringPause.sol";

/// @title LiquidationAuction
/// @notice Dutch auctions of a pro-rata share of a breached account's portfolio (positions, collateral, cash),
/// starting at the keepers' attested model value and moving in the bidder's favour along an {AuctionCurves} curve by
/// at most a risk-sized span; after `lastResortAfter` resets the fund's account takes the book (buyer of last
/// resort). It is the clearinghouse's liquidation module and also holds the insurance fund ({InsuranceFund}).
///
/// Notation (docs/auctions.md): attested equity `E`, maintenance margin `MM`, initial margin `IM`, target
/// `T = ceil(MM * (1 + buffer))`, sold fraction of the original portfolio `S` (WAD), net proceeds held in escrow for
/// the owner `C`, penalty rate `lam`, model value `V = E + sum(floor(haircut * value of collateral))` (the haircut
/// taken off the collateral at the stored spot prices, added back). Price of the whole original portfolio after `t`
/// seconds: `p = V - span * (1 - c(t))`, `span = min(V, ceil(spanWad * MM))` if `V >= 0` else `ceil(spanWad * MM)`.
/// Everything that sizes the sale uses `E`. A solvent bid may buy at most
/// `g* = ceil((D + 2) / (T - E + p - ceil(p * lam)))` with the remaining deficit `D = ceil((1 - S)(T - E)) - C`; an
/// insolvent auction (`E < 0`) sells everything that is left in one bid.
///
/// Money: the module's own clearinghouse account holds the escrow `C` of every running auction, their penalties until
/// the auction ends, and the insurance fund; `cashOf(this) == fundLiabilities() + sum(escrow + penalties)`.
contract LiquidationAuction is ILiquidationAuction, InsuranceFund, ExpiringPause, ReentrancyGuard {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;
    using SafeCast for int256;

    // ------------------------------------------------------------------ types

    /// @dev Storage layout of an auction, grouped by access: a partial bid reads slots 0-2 and writes slot 0 (and
    /// slot 2 when it pays a penalty); slot 3 is read only when the auction ends. Every slot a bid writes is non-zero
    /// from the start (`startedAt`, `initial`), so no bid pays for a zero-to-non-zero write.
    struct StoredAuction {
        // slot 0: written by every bid
        uint32 startedAt; // [unix seconds]
        uint32 expectedNonce;
        uint64 soldWad; // [wad]
        uint96 escrow; // [quote base units]
        bool done;
        uint8 resets;
        // slot 1: read by every bid
        int96 equity; // [quote base units]
        uint96 maintenance; // [quote base units]
        uint64 id;
        // slot 2: read by every bid, written by a paying bid
        uint96 initial; // [quote base units]
        uint128 penaltyTotal; // [quote base units]
        uint16 configVersion;
        // slot 3: read by every bid
        int96 top; // [quote base units] start price: the attested model value V
        uint96 span; // [quote base units]
        // slot 4: read when the auction ends
        address starter;
        uint96 rewardPromised; // [quote base units]
    }

    /// @dev Storage layout of {Config}: a bid reads slots 0 and 1 only (`cut <= RAY < 2^96`).
    struct StoredConfig {
        // slot 0
        AuctionCurves.Kind kind;
        uint32 tau; // [seconds]
        uint32 step; // [seconds]
        uint96 cut; // [ray]
        uint32 tail; // [seconds]
        uint32 maxRecordAge; // [seconds]
        uint8 lastResortAfter;
        // slot 1
        uint64 cuspWad; // [wad]
        uint64 bufferWad; // [wad]
        uint64 penaltyWad; // [wad]
        uint64 chipWad; // [wad]
        // slot 2: read only when an auction (re)starts
        uint128 tip; // [quote base units]
        uint64 spanWad; // [wad]
    }

    // ------------------------------------------------------------------ constants

    uint256 internal constant WAD = 1e18;
    uint256 internal constant RAY = 1e27;
    uint256 internal constant RAY_PER_WAD = 1e9;
    /// @dev Base units added to the deficit when sizing a bid: amount (floored) and penalty (ceiled) each lose the
    /// account less than one unit, so `D + 2` reaches the target despite rounding.
    uint256 internal constant ROUNDING_SLACK = 2;
    /// @notice Lowest floor a configuration may set: a solvent book never sells below this fraction of its attested
    /// value [wad].
    uint256 public constant MIN_CUSP = 0.1e18;
    /// @notice No curve may reach its floor sooner than this after a (re)start [seconds].
    uint256 public constant MIN_DESCENT = 300;

    // ------------------------------------------------------------------ immutables

    /// @notice The clearinghouse this module liquidates for.
    IClearinghouse public immutable clearinghouse;
    /// @notice The clearinghouse's quote asset.
    IERC20 public immutable quoteAsset;
    /// @dev Quote base units per whole quote unit (10^decimals), as the core values collateral.
    uint256 internal immutable _quoteUnit;

    // ------------------------------------------------------------------ storage

    /// @dev Every configuration ever set, by version (1, 2, ...); never modified once written, so a running auction
    /// keeps the curve, floor and penalty it started with (review finding M-5).
    mapping(uint256 version => StoredConfig) internal _configs;
    /// @notice Version of the configuration new auctions start on.
    uint16 public configVersion;
    mapping(address account => StoredAuction) internal _auctions;
    /// @notice Number of auctions ever started (ids start at 1).
    uint64 public auctionCount;
    /// @notice The clearinghouse account that holds what the buyer of last resort takes (zero: none; the owner sets
    /// it). It is margined like any account; its claims are settled like any bidder's.
    address public fundAccount;

    // ------------------------------------------------------------------ constructor

    /// @param clearinghouse_ The clearinghouse (this contract must then be set as its liquidation module).
    /// @param owner_ Owner (parameters, pause).
    /// @param config_ Initial parameters, see {setConfig}.
    constructor(IClearinghouse clearinghouse_, address owner_, Config memory config_) Ownable(owner_) {
        clearinghouse = clearinghouse_;
        IERC20 quoteToken = IERC20(clearinghouse_.quoteAsset());
        quoteAsset = quoteToken;
        _quoteUnit = 10 ** IERC20Metadata(address(quoteToken)).decimals();
        quoteToken.forceApprove(address(clearinghouse_), type(uint256).max);
        _setConfig(config_);
    }

    // ------------------------------------------------------------------ external functions

    /// @notice Sets the auction parameters as a new configuration version (bounded; the owner is a timelock in every
    /// deployment). Auctions already running keep the version they started with; new ones use this one. The pause
    /// ({ExpiringPause}) stops new auctions only: bids, resets, cures and claims of running auctions go on.
    /// @param config_ The new parameters.
    function setConfig(Config calldata config_) external onlyOwner {
        _setConfig(config_);
    }

    /// @notice Sets the account that holds what the buyer of last resort takes (not zero, not the module; the
    /// owner is a timelock in every deployment). Claims it already holds stay its own.
    /// @param fundAccount_ The new fund account (an account operated for the fund under the timelock).
    function setFundAccount(address fundAccount_) external onlyOwner {
        if (fundAccount_ == address(0) || fundAccount_ == address(this)) revert LA_InvalidFundAccount(fundAccount_);
        fundAccount = fundAccount_;
        emit FundAccountSet(fundAccount_);
    }

    /// @notice Starts an auction for `account` from its breach record (recorded by the clearinghouse from an M-of-N
    /// keeper attestation). The record must be bound to the account's current state nonce and fresh.
    /// @return id The auction id.
    function start(address account) external nonReentrant whenNotPaused returns (uint256 id) {
        StoredAuction storage a = _auctions[account];
        if (a.startedAt != 0) revert LA_AuctionRunning(account, a.id);
        uint16 version = configVersion;
        Config memory cfg = _loadConfig(version, true);
        (BreachRecord memory b, uint32 nonce) = _freshBreach(account, cfg.maxRecordAge);
        id = ++auctionCount;
        uint256 reward = cfg.tip + Math.mulDiv(cfg.chipWad, b.maintenance, WAD, Math.Rounding.Floor);
        (int256 top_, uint256 span_) = _topAndSpan(account, b, cfg.spanWad);
        _auctions[account] = StoredAuction({
            startedAt: block.timestamp.toUint32(),
            expectedNonce: nonce,
            soldWad: 0,
            escrow: 0,
            done: false,
            resets: 0,
            equity: b.equity,
            maintenance: b.maintenance,
            id: uint64(id),
            initial: b.initial,
            penaltyTotal: 0,
            configVersion: version,
            top: int96(top_), // within int96: checked by _topAndSpan
            span: span_.toUint96(),
            starter: msg.sender,
            rewardPromised: reward.toUint96()
        });
        clearinghouse.primeLot(account);
        _emitStarted(id, account, b, _target(b.maintenance, cfg.bufferWad), reward, nonce);
    }

    /// @notice Restarts a running auction from a fresh breach record once it ran past `tail`, its price passed the
    /// floor (`cusp`), the account changed outside the auction, or a solvent auction's account is now attested
    /// insolvent (it is then auctioned whole). Escrowed proceeds carry over; if they already
    /// cover the fresh deficit, the auction ends as restored instead. The price restarts at the fresh model value.
    /// Refused with {LA_LastResortDue} at the floor or tail after `lastResortAfter` resets while a fund account is
    /// set, can take the book (it is not this account and not breached itself) and the fund can pay:
    /// {takeAsLastResort} then takes the book. Not blocked by the pause.
    function redo(address account) external nonReentrant {
        _restart(account, false);
    }

    /// @notice The buyer of last resort. Once the auction reached its floor or tail after `lastResortAfter` resets,
    /// the fund's account (`fundAccount`) takes, at the fresh attested model value `V` (the price restarts from the
    /// same fresh breach record {redo} needs), the fraction that restores the account to `MM * (1 + buffer)`
    /// (`allowed(E, T, 0, C, V)`; everything when `E < 0`). It pays `floor(fraction * V)` from the fund's free balance
    /// into escrow (penalty and starter reward as for any bid); an insolvent book's payment to the fund's account
    /// comes from escrow, then the fund, a shortfall being bad debt as for any bidder. No margin check: the fund
    /// stands behind its account. A claim the fund's account holds on another book is settled first. The auction
    /// then ends (escrow to the account, reward to the starter, penalty to the fund). Anyone may call; not blocked by
    /// the pause.
    function takeAsLastResort(address account) external nonReentrant {
        _restart(account, true);
    }

    /// @notice Buys up to `maxFractionWad` of the account's original portfolio at the current price, never more than
    /// the fraction that restores the account to `MM * (1 + buffer)` (insolvent auctions: everything left, at once).
    /// The bidder (`msg.sender`) receives a claim on that share of the account's positions, collateral and cash in
    /// the clearinghouse (counted in its effective book at once, moved into its own storage by the core's
    /// `settleClaim(bidder)`, which anyone may call later) and pays `fraction * price` in quote cash (receives it
    /// when the price is negative). A bidder still holding an unsettled claim on another account settles it first. It must keep, above its
    /// maintenance margin, the cash it pays plus `fraction * (IM - E)` of the sold book: from a fresh margin record,
    /// or (no option positions) from its collateral value at fresh prices; `deposit` quote units pulled from it in the
    /// same call count.
    /// Reverts with {LA_AccountHealthy} while the latest attestation of the account's current portfolio (plus escrow)
    /// shows it at or above maintenance margin. The bid that completes the sale (everything, or the allowed fraction)
    /// marks the auction done ({SaleCompleted}); {finish} then ends it. Not blocked by the pause.
    /// @param maxPrice Worst price (per whole portfolio) the bidder accepts: the bid reverts if the price is higher.
    /// @param deadline Last timestamp at which the bid may execute.
    /// @return fractionWad The fraction of the original portfolio bought.
    /// @return amount Quote units paid by the bidder (negative: paid to it; any part the fund could not pay is a
    /// bad-debt claim, see {InsuranceFund}).
    function bid(address account, uint256 maxFractionWad, int256 maxPrice, uint256 deadline, uint256 deposit)
        external
        nonReentrant
        returns (uint256 fractionWad, int256 amount)
    {
        if (block.timestamp > deadline) revert LA_BidExpired(deadline, block.timestamp);
        if (msg.sender == account) revert LA_SelfBid(account);
        Auction memory m = _load(account);
        if (m.startedAt == 0) revert LA_NoAuction(account);
        if (m.done) revert LA_AuctionDone(account, m.id);
        Config memory cfg = _loadConfig(m.configVersion, false);
        (int256 price_, uint256 allowed, uint256 fill) = _fill(account, m, cfg, maxFractionWad, maxPrice);
        amount = _mulWadSignedFloor(fill, price_);
        // an insolvent book's payout is sized first: the bidder's margin counts only what escrow and fund can pay,
        // never a bad-debt IOU (review finding M-3)
        int256 paid = amount >= 0 ? amount : -_payable(m, uint256(-amount)).toInt256();
        _checkBidder(msg.sender, fill, paid, m, cfg, deposit);
        uint256 penalty = _claimAndPay(m, account, msg.sender, fill, amount, cfg.penaltyWad, false);
        m.soldWad += uint64(fill);
        m.done = m.soldWad == WAD || fill == allowed;
        _emitBid(m, account, price_, fill, amount, penalty);
        _afterBid(account, m, penalty > 0);
        fractionWad = fill;
    }

    /// @notice Ends an auction whose bids sold what they may (`auctionOf(account).done`): everything (`SoldOut`) or the
    /// fraction that restores the account (`Restored`). Pays the escrow to the account, the starter's reward and the
    /// fund's share of the penalty, and clears the breach. Anyone may call (the starter's reward and the owner's
    /// escrow are paid here); not blocked by the pause.
    function finish(address account) external nonReentrant {
        Auction memory m = _load(account);
        if (m.startedAt == 0) revert LA_NoAuction(account);
        if (!m.done) {
            revert LA_AuctionNotDone(account, m.soldWad, _deficit(m, _target(m.maintenance, _bufferOf(m.configVersion))));
        }
        _finish(account, m, m.soldWad == WAD ? EndReason.SoldOut : EndReason.Restored);
    }

    /// @notice Ends the auction when a fresh margin record of the account's current portfolio, plus the proceeds
    /// held for it in escrow, reaches `MM * (1 + buffer)` (just `MM` once the auction ran past `tail`). Not blocked
    /// by the pause.
    function cure(address account) external nonReentrant {
        Auction memory a = _load(account);
        if (a.startedAt == 0) revert LA_NoAuction(account);
        if (a.done) revert LA_AuctionDone(account, a.id);
        (int256 equity, uint256 maintenance,, uint32 attestedAt) = clearinghouse.marginRecord(account);
        if (attestedAt == 0) revert LA_StaleBreach(account, 0, clearinghouse.stateNonce(account));
        Config memory cfg = _loadConfig(a.configVersion, false);
        if (block.timestamp > uint256(attestedAt) + cfg.maxRecordAge) {
            revert LA_RecordExpired(account, attestedAt, cfg.maxRecordAge);
        }
        // normally the record must reach MM x (1 + buffer); once the auction ran past `tail`, MM is enough (an
        // account attested healthy cannot be bid on, so this ends auctions stuck between MM and the target)
        uint256 target = block.timestamp - a.startedAt > cfg.tail ? maintenance : _target(maintenance, cfg.bufferWad);
        int256 withEscrow = equity + int256(uint256(a.escrow));
        if (withEscrow < int256(target)) revert LA_NotCured(account, withEscrow, target);
        _finish(account, a, EndReason.Cured);
    }

    /// @notice Deposits `amount` quote units (pulled from the caller) into `account` and ends its auction; the amount
    /// must cover the remaining deficit `ceil((1 - S)(T - E)) - C`. Not blocked by the pause.
    function depositAndCure(address account, uint256 amount) external nonReentrant {
        Auction memory a = _load(account);
        if (a.startedAt == 0) revert LA_NoAuction(account);
        if (a.done) revert LA_AuctionDone(account, a.id);
        uint32 current = clearinghouse.stateNonce(account);
        if (current != a.expectedNonce) revert LA_AccountChanged(account, a.expectedNonce, current);
        int256 d = _deficit(a, _target(a.maintenance, _bufferOf(a.configVersion)));
        if (amount == 0 || int256(amount) < d) revert LA_DepositBelowDeficit(amount, d);
        _depositInto(msg.sender, account, amount);
        _finish(account, a, EndReason.CuredByDeposit);
    }

    /// @notice Partial top-up: pulls `amount` quote units from the caller into the escrow of `account`'s running
    /// auction. The escrow lowers the remaining deficit `ceil((1 - S)(T - E)) - C`, so bids may buy less; it is the
    /// account's and is paid to it when the auction ends. If the escrow then covers the deficit the auction ends
    /// as `CuredByDeposit`. (Quote deposited directly into a breached account is held apart and does not count;
    /// this is how an account holder pays towards its deficit.) Not blocked by the pause.
    /// @param account The account whose auction is topped up.
    /// @param amount Quote base units, > 0.
    function topUp(address account, uint256 amount) external nonReentrant {
        Auction memory a = _load(account);
        if (a.startedAt == 0) revert LA_NoAuction(account);
        if (a.done) revert LA_AuctionDone(account, a.id);
        if (amount == 0) revert LA_ZeroAmount();
        _depositInto(msg.sender, address(this), amount);
        a.escrow += amount.toUint128();
        _auctions[account].escrow = uint256(a.escrow).toUint96();
        int256 d = _deficit(a, _target(a.maintenance, _bufferOf(a.configVersion)));
        emit ToppedUp(a.id, account, msg.sender, amount, a.escrow, d);
        if (d <= 0) _finish(account, a, EndReason.CuredByDeposit);
    }

    /// @notice Adds `amount` quote units (pulled from the caller) to the insurance fund; repays bad debt first.
    function fundDeposit(uint256 amount) external nonReentrant {
        if (amount == 0) revert LA_ZeroAmount();
        _depositInto(msg.sender, address(this), amount);
        _fundReceive(0, msg.sender, amount);
    }

    /// @inheritdoc IInsuranceFund
    function collectBadDebt(uint256 claimId) external override nonReentrant {
        (address creditor, uint256 amount) = _fundCollect(claimId);
        clearinghouse.transferCash(address(this), creditor, amount);
    }

    // ------------------------------------------------------------------ external views

    /// @notice Current parameters (those new auctions start on).
    function config() external view returns (Config memory) {
        return _loadConfig(configVersion, true);
    }

    /// @notice The parameters of configuration `version` (immutable once set; running auctions name theirs in
    /// {auctionOf}).
    function configAt(uint16 version) external view returns (Config memory) {
        if (version == 0 || version > configVersion) revert LA_UnknownConfigVersion(version);
        return _loadConfig(version, true);
    }

    /// @notice The running auction of `account` (all zero if none).
    function auctionOf(address account) external view returns (Auction memory m) {
        m = _load(account);
        if (m.startedAt != 0) {
            StoredAuction storage a = _auctions[account];
            (m.starter, m.rewardPromised) = (a.starter, a.rewardPromised);
        }
    }

    /// @notice Whether the auction of `account` is at its floor or tail after `lastResortAfter` resets with a fund
    /// account set that can take the book (not `account` itself, not breached): {redo} is then refused (unless the fund's free balance cannot pay the fresh price) and
    /// {takeAsLastResort} takes the book (it needs a fresh breach record, as {redo} does).
    function lastResortDue(address account) external view returns (bool) {
        Auction memory m = _load(account);
        if (m.startedAt == 0 || m.done || !_canTake(fundAccount, account)) return false;
        Config memory cfg = _loadConfig(m.configVersion, false);
        return _atFloorOrTail(m, cfg) && m.resets >= cfg.lastResortAfter;
    }

    /// @notice Current price (per whole original portfolio), the fraction a bid may buy now, the curve factor and
    /// whether the auction must be reset first.
    function quote(address account)
        external
        view
        returns (int256 price_, uint256 allowedWad, uint256 factorRay, bool needsReset)
    {
        Auction memory m = _load(account);
        if (m.startedAt == 0) revert LA_NoAuction(account);
        Config memory cfg = _loadConfig(m.configVersion, false);
        uint256 elapsed;
        (elapsed, factorRay) = _elapsedAndFactor(m, cfg);
        price_ = AuctionCurves.priceAt(m.modelValue, m.span, factorRay);
        if (m.done) return (price_, 0, factorRay, false); // sold what it may: only {finish} is left
        needsReset = elapsed > cfg.tail || factorRay < uint256(cfg.cuspWad) * RAY_PER_WAD
            || clearinghouse.stateNonce(account) != m.expectedNonce || _turnedInsolvent(account, m, cfg.maxRecordAge);
        allowedWad = _allowed(m, cfg, price_);
    }

    /// @notice Remaining deficit `ceil((1 - S)(T - E)) - C` of the running auction (<= 0: restored).
    function deficitOf(address account) external view returns (int256) {
        Auction memory m = _load(account);
        if (m.startedAt == 0) revert LA_NoAuction(account);
        return _deficit(m, _target(m.maintenance, _bufferOf(m.configVersion)));
    }

    // ------------------------------------------------------------------ internal functions

    /// @dev A solvent auction whose account now has a fresh breach record of its current portfolio showing E < 0:
    /// {redo} may reset it to a whole-book sale.
    function _turnedInsolvent(address account, Auction memory m, uint256 maxRecordAge) internal view returns (bool) {
        if (m.equity < 0) return false;
        BreachRecord memory b = clearinghouse.breachOf(account);
        return b.equity < 0 && b.stateNonce == m.expectedNonce && b.timestamp != 0
            && block.timestamp <= uint256(b.timestamp) + maxRecordAge;
    }

    function _setConfig(Config memory c) internal {
        AuctionCurves.validate(AuctionCurves.Curve(c.kind, c.tau, c.step, c.cut));
        AuctionLogic.checkConfig(c);
        uint16 version = configVersion + 1;
        configVersion = version;
        _configs[version] = StoredConfig({
            kind: c.kind,
            tau: c.tau,
            step: c.step,
            cut: uint96(c.cut), // validated above when the curve uses it; a Linear curve's unused cut is bounded below
            tail: c.tail,
            maxRecordAge: c.maxRecordAge,
            lastResortAfter: c.lastResortAfter,
            cuspWad: c.cuspWad,
            bufferWad: c.bufferWad,
            penaltyWad: c.penaltyWad,
            chipWad: c.chipWad,
            tip: c.tip,
            spanWad: c.spanWad
        });
        emit ConfigSet(c);
        emit ConfigVersionSet(version);
    }

    /// @dev Target buffer of configuration `version`.
    function _bufferOf(uint16 version) internal view returns (uint256) {
        return _configs[version].bufferWad;
    }

    /// @dev The parameters of configuration `version` as {Config}; `tip` and `spanWad` (slot 2) only when `full`.
    function _loadConfig(uint16 version, bool full) internal view returns (Config memory c) {
        StoredConfig storage s = _configs[version];
        (c.kind, c.tau, c.step, c.cut, c.tail, c.maxRecordAge) = (s.kind, s.tau, s.step, s.cut, s.tail, s.maxRecordAge);
        c.lastResortAfter = s.lastResortAfter;
        (c.cuspWad, c.bufferWad, c.penaltyWad, c.chipWad) = (s.cuspWad, s.bufferWad, s.penaltyWad, s.chipWad);
        if (full) (c.tip, c.spanWad) = (s.tip, s.spanWad);
    }

    /// @dev The auction of `account` (slots 0-3; `starter` and `rewardPromised` are left zero, see {_finish}).
    function _load(address account) internal view returns (Auction memory m) {
        StoredAuction storage a = _auctions[account];
        (m.startedAt, m.expectedNonce, m.soldWad, m.escrow) = (a.startedAt, a.expectedNonce, a.soldWad, a.escrow);
        (m.done, m.resets) = (a.done, a.resets);
        (m.equity, m.maintenance, m.id) = (a.equity, a.maintenance, a.id);
        (m.initial, m.penaltyTotal, m.configVersion) = (a.initial, a.penaltyTotal, a.configVersion);
        (m.modelValue, m.span) = (a.top, a.span);
    }

    /// @dev Reads and checks the breach record: present, below MM, bound to the current nonce, fresh, and not
    /// superseded by a later healthy record of the same portfolio.
    function _freshBreach(address account, uint256 maxAge)
        internal
        view
        returns (BreachRecord memory b, uint32 nonce)
    {
        b = clearinghouse.breachOf(account);
        if (b.timestamp == 0) revert LA_NoBreach(account);
        nonce = clearinghouse.stateNonce(account);
        if (b.stateNonce != nonce) revert LA_StaleBreach(account, b.stateNonce, nonce);
        if (block.timestamp > uint256(b.timestamp) + maxAge) revert LA_RecordExpired(account, b.timestamp, maxAge);
        if (int256(b.equity) >= int256(uint256(b.maintenance))) {
            revert LA_NotBreached(account, b.equity, b.maintenance);
        }
        (int256 equity, uint256 maintenance,, uint32 attestedAt) = clearinghouse.marginRecord(account);
        if (attestedAt > b.timestamp && equity >= int256(maintenance)) revert LA_NotBreached(account, equity, maintenance);
    }

    function _elapsedAndFactor(Auction memory m, Config memory cfg) internal view returns (uint256 elapsed, uint256 f) {
        elapsed = block.timestamp - m.startedAt;
        f = AuctionCurves.factor(AuctionCurves.Curve(cfg.kind, cfg.tau, cfg.step, cfg.cut), elapsed);
    }

    /// @dev Whether the auction ran past `tail` or its curve passed the floor (`cusp`).
    function _atFloorOrTail(Auction memory m, Config memory cfg) internal view returns (bool) {
        (uint256 elapsed, uint256 f) = _elapsedAndFactor(m, cfg);
        return elapsed > cfg.tail || f < uint256(cfg.cuspWad) * RAY_PER_WAD;
    }

    /// @dev The auction restarted in memory from the fresh breach record `b` of the current portfolio (nonce
    /// `current`): the remaining book is the new original, the price restarts at its fresh model value.
    function _rebase(address account, Auction memory m, BreachRecord memory b, uint32 current, uint256 spanWad)
        internal
        view
    {
        (int256 top, uint256 span) = _topAndSpan(account, b, spanWad);
        (m.startedAt, m.expectedNonce, m.soldWad) = (uint64(block.timestamp), current, 0);
        (m.equity, m.maintenance, m.initial) = (b.equity, b.maintenance, b.initial);
        (m.modelValue, m.span) = (int96(top), span.toUint96()); // top within int96: checked by _topAndSpan
    }

    /// @dev Start price and span of the book of breach record `b`: `top = V = E + sum(floor(haircut * gross value))`
    /// over the account's collateral at the stored spot prices (the haircut is a margin charge, not a loss of value;
    /// each gross value rounded down as the core values collateral), `span = ceil(spanWad * MM)`, at most `V` when
    /// `V >= 0` (a solvent book is never sold below zero).
    function _topAndSpan(address account, BreachRecord memory b, uint256 spanWad)
        internal
        view
        returns (int256 top, uint256 span)
    {
        top = int256(b.equity) + AuctionLogic.haircutValue(clearinghouse, account, _quoteUnit).toInt256();
        span = Math.mulDiv(spanWad, b.maintenance, WAD, Math.Rounding.Ceil);
        if (top >= 0 && uint256(top) < span) span = uint256(top);
        if (top > type(int96).max) revert AuctionCurves.AC_PriceOutOfRange(top, span); // top >= E >= int96 min
    }

    /// @dev Current price and allowed fraction; reverts if the auction must be reset.
    function _priceAndAllowed(address account, Auction memory m, Config memory cfg)
        internal
        view
        returns (int256 price_, uint256 allowed)
    {
        (uint256 elapsed, uint256 f) = _elapsedAndFactor(m, cfg);
        if (elapsed > cfg.tail || f < uint256(cfg.cuspWad) * RAY_PER_WAD) revert LA_AuctionNeedsReset(account, elapsed, f);
        price_ = AuctionCurves.priceAt(m.modelValue, m.span, f);
        allowed = _allowed(m, cfg, price_);
    }

    function _target(uint256 maintenance, uint256 bufferWad) internal pure returns (uint256) {
        return Math.mulDiv(maintenance, WAD + bufferWad, WAD, Math.Rounding.Ceil);
    }

    /// @dev `ceil((1 - S)(T - E)) - C`.
    function _deficit(Auction memory m, uint256 target) internal pure returns (int256) {
        uint256 gap = uint256(int256(target) - int256(m.equity)); // > 0: E < MM <= T
        return int256(Math.mulDiv(WAD - m.soldWad, gap, WAD, Math.Rounding.Ceil)) - int256(uint256(m.escrow));
    }

    /// @dev Largest fraction (of the original portfolio) a bid at `price_` may buy.
    function _allowed(Auction memory m, Config memory cfg, int256 price_) internal pure returns (uint256) {
        uint256 remaining = WAD - m.soldWad;
        if (m.equity < 0) return remaining;
        uint256 target = _target(m.maintenance, cfg.bufferWad);
        int256 d = _deficit(m, target);
        if (d <= 0) return 0;
        // solvent: 0 <= V - span <= price <= V
        uint256 p = uint256(price_);
        uint256 pNet = p - Math.mulDiv(p, cfg.penaltyWad, WAD, Math.Rounding.Ceil);
        uint256 denom = uint256(int256(target) - int256(m.equity)) + pNet;
        uint256 g = Math.mulDiv(uint256(d) + ROUNDING_SLACK, WAD, denom, Math.Rounding.Ceil);
        return g < remaining ? g : remaining;
    }

    /// @dev floor(fraction * price / WAD) for a signed price.
    function _mulWadSignedFloor(uint256 fractionWad, int256 price_) internal pure returns (int256) {
        if (price_ >= 0) return int256(Math.mulDiv(fractionWad, uint256(price_), WAD, Math.Rounding.Floor));
        return -int256(Math.mulDiv(fractionWad, uint256(-price_), WAD, Math.Rounding.Ceil));
    }

    /// @dev What an insolvent book's bidder is actually paid for `owed`: the escrow first, then the fund's free
    /// balance (the rest would be a bad-debt claim, which is not cash).
    function _payable(Auction memory m, uint256 owed) internal view returns (uint256) {
        uint256 fromEscrow = owed < m.escrow ? owed : m.escrow;
        uint256 rest = owed - fromEscrow;
        uint256 balance = _fundBalance;
        return fromEscrow + (rest < balance ? rest : balance);
    }

    /// @dev The bidder must keep `paid + ceil(fraction * (IM - E))` above its maintenance margin, `paid` being the
    /// cash it pays (negative: the cash it is actually paid). A same-call `deposit` is pulled FIRST, so that a token
    /// calling back the bidder cannot change its book after it was measured (review finding L-6).
    function _checkBidder(
        address bidder,
        uint256 fractionWad,
        int256 paid,
        Auction memory m,
        Config memory cfg,
        uint256 deposit
    ) internal {
        if (deposit > 0) _depositInto(bidder, bidder, deposit);
        int256 headroom;
        (int256 equity, uint256 maintenance,, uint32 attestedAt) = clearinghouse.marginRecord(bidder);
        if (attestedAt != 0 && block.timestamp <= uint256(attestedAt) + cfg.maxRecordAge) {
            // the record predates this call: a quote deposit moves no stateNonce and is not in it
            headroom = equity - int256(maintenance) + int256(deposit);
        } else if (clearinghouse.seriesOf(bidder).length == 0) {
            headroom = clearinghouse.freshCollateralValue(bidder); // includes the deposit; stale price reverts
        } else {
            revert LA_BidderMarginUnknown(bidder);
        }
        uint256 risk = uint256(int256(uint256(m.initial)) - int256(m.equity)); // IM >= MM > E
        int256 required = paid + int256(Math.mulDiv(fractionWad, risk, WAD, Math.Rounding.Ceil));
        if (headroom < required) revert LA_BidderUndermargined(bidder, headroom, required);
    }

    /// @dev Pulls `amount` quote tokens from `payer`, deposits them into the module's clearinghouse account and, unless
    /// `to` is the module, moves them to `to` as quote cash (the core's `deposit` credits the caller only).
    function _depositInto(address payer, address to, uint256 amount) internal {
        quoteAsset.safeTransferFrom(payer, address(this), amount);
        clearinghouse.deposit(address(quoteAsset), amount);
        if (to != address(this)) clearinghouse.transferCash(address(this), to, amount);
    }

    /// @dev Pays out escrow (to the account), the starter's reward and the fund's share of the penalty; clears the
    /// breach and deletes the auction.
    function _finish(address account, Auction memory m, EndReason reason) internal {
        {
            StoredAuction storage a = _auctions[account];
            (m.starter, m.rewardPromised) = (a.starter, a.rewardPromised);
        }
        uint256 reward = m.penaltyTotal < m.rewardPromised ? m.penaltyTotal : m.rewardPromised;
        delete _auctions[account];
        if (m.escrow > 0) clearinghouse.transferCash(address(this), account, m.escrow);
        if (reward > 0) clearinghouse.transferCash(address(this), m.starter, reward);
        _fundReceive(m.id, account, m.penaltyTotal - reward);
        clearinghouse.clearBreach(account);
        emit AuctionEnded(
            m.id, account, reason, m.soldWad, m.escrow, m.penaltyTotal, reward, _fundBalance,
            _outstandingDebt
        );
    }

    // ------------------------------------------------------------------ private functions

    /// @dev {redo} (`lastResort` false) and {takeAsLastResort}: both restart from the fresh breach record, the
    /// second only when due, the first only when not (or when the fund cannot pay).
    function _restart(address account, bool lastResort) private {
        Auction memory m = _load(account);
        if (m.startedAt == 0) revert LA_NoAuction(account);
        if (m.done) revert LA_AuctionDone(account, m.id);
        address holder = fundAccount;
        Config memory cfg = _loadConfig(m.configVersion, true);
        bool atFloor = _atFloorOrTail(m, cfg);
        bool due = atFloor && m.resets >= cfg.lastResortAfter && _canTake(holder, account);
        if (lastResort && !due) {
            revert LA_LastResortNotDue(account, block.timestamp - m.startedAt, m.resets, cfg.lastResortAfter);
        }
        (BreachRecord memory b, uint32 current) = _freshBreach(account, cfg.maxRecordAge);
        if (!atFloor && current == m.expectedNonce && !(b.equity < 0 && m.equity >= 0)) {
            revert LA_ResetNotNeeded(account);
        }
        uint256 target = _target(b.maintenance, cfg.bufferWad);
        if (b.equity >= 0 && int256(target) - int256(b.equity) <= int256(uint256(m.escrow))) {
            _finish(account, m, EndReason.Restored);
            return;
        }
        _rebase(account, m, b, current, cfg.spanWad);
        if (due) {
            uint256 fill = _allowed(m, cfg, m.modelValue);
            int256 amount = _mulWadSignedFloor(fill, m.modelValue);
            bool canPay = amount <= 0 || uint256(amount) <= _fundBalance;
            if (lastResort) {
                if (!canPay) revert LA_FundCannotPay(uint256(amount), _fundBalance);
                _takeBook(account, holder, m, fill, amount, cfg.penaltyWad);
                return;
            }
            if (canPay) revert LA_LastResortDue(account, m.resets);
        }
        m.resets += 1;
        StoredAuction storage a = _auctions[account];
        (a.startedAt, a.expectedNonce, a.soldWad, a.resets) = (block.timestamp.toUint32(), current, 0, m.resets);
        (a.equity, a.maintenance, a.initial) = (b.equity, b.maintenance, b.initial);
        (a.top, a.span) = (m.modelValue, m.span);
        _emitReset(m, account, target);
    }

    /// @dev Whether the fund's account `holder` can take `account`'s book: one is set, it is not the account being
    /// auctioned (its own book is auctioned like any other), and it is not itself breached (a bound book takes no
    /// claim). Otherwise the last resort is not due and {redo} resets the auction as before `lastResortAfter`.
    function _canTake(address holder, address account) private view returns (bool) {
        return holder != address(0) && holder != account && !clearinghouse.isBreached(holder);
    }

    /// @dev The fund's account `holder` takes `fill` of the rebased book at its model value for `amount`; the
    /// auction ends.
    function _takeBook(address account, address holder, Auction memory m, uint256 fill, int256 amount, uint256 penaltyWad)
        private
    {
        AuctionLogic.settleOtherClaim(clearinghouse, holder, account);
        _claimAndPay(m, account, holder, fill, amount, penaltyWad, true);
        m.soldWad = uint64(fill);
        emit LastResortTaken(m.id, account, holder, fill, m.modelValue, amount, _fundBalance);
        _finish(account, m, fill == WAD ? EndReason.SoldOut : EndReason.Restored);
    }

    function _emitStarted(
        uint256 id,
        address account,
        BreachRecord memory b,
        uint256 target,
        uint256 reward,
        uint32 nonce
    ) private {
        StoredAuction storage a = _auctions[account];
        emit AuctionStarted(
            id, account, msg.sender, b.equity, b.maintenance, b.initial, a.top, a.span, target, reward, nonce
        );
    }

    function _emitReset(Auction memory m, address account, uint256 target) private {
        emit AuctionReset(
            m.id, account, msg.sender, m.equity, m.maintenance, m.initial, m.modelValue, m.span, target, m.escrow,
            m.expectedNonce
        );
    }

    /// @dev One write of slot 0 (nonce, sold fraction, escrow, done), and of slot 2 if a penalty was paid ({finish}
    /// then ends the auction: the bid itself does not pay out escrow, reward and fund, so every bid costs the same).
    function _afterBid(address account, Auction memory m, bool paidPenalty) private {
        StoredAuction storage a = _auctions[account];
        (a.expectedNonce, a.soldWad, a.escrow, a.done) = (m.expectedNonce, m.soldWad, uint96(m.escrow), m.done);
        if (paidPenalty) a.penaltyTotal = m.penaltyTotal;
        if (m.done) {
            EndReason reason = m.soldWad == WAD ? EndReason.SoldOut : EndReason.Restored;
            emit SaleCompleted(m.id, account, reason, m.soldWad, m.escrow);
        }
    }

    /// @dev Checks nonce, reset need and price limit; returns the price, the allowed and the filled fraction.
    function _fill(address account, Auction memory m, Config memory cfg, uint256 maxFractionWad, int256 maxPrice)
        private
        view
        returns (int256 price_, uint256 allowed, uint256 fill)
    {
        {
            // one read of the account's record: its current nonce, and the latest record of this very portfolio
            // (the core keeps only the newest), which must not show it healthy
            (int256 equity, uint256 maintenance, uint32 current, uint32 attestedAt) =
                clearinghouse.marginRecord(account);
            if (current != m.expectedNonce) revert LA_AccountChanged(account, m.expectedNonce, current);
            if (attestedAt != 0 && equity + int256(uint256(m.escrow)) >= int256(maintenance)) {
                revert LA_AccountHealthy(account, equity, maintenance);
            }
        }
        (price_, allowed) = _priceAndAllowed(account, m, cfg);
        if (price_ > maxPrice) revert LA_PriceAboveLimit(price_, maxPrice);
        uint256 remaining = WAD - m.soldWad;
        if (m.equity < 0 && maxFractionWad < remaining) revert LA_MustBuyWhole(maxFractionWad, remaining);
        fill = maxFractionWad < allowed ? maxFractionWad : allowed;
        if (fill == 0) revert LA_NothingToSell(account);
    }

    /// @dev Records the claim of `holder` (the bidder, or the fund's account when `fromFund`) on `fill` of the ORIGINAL
    /// portfolio (that share of what the account still holds) and settles the cash in the same core call: a positive
    /// `amount` is paid by the bidder (by the fund's free balance when `fromFund`: no cash moves, it is already in the
    /// module's account) into escrow (penalty kept apart); a negative one is paid to the holder from the escrow
    /// first, then from the fund, the rest as a bad-debt claim. Returns the penalty; `m.expectedNonce` becomes the
    /// account's new state nonce.
    function _claimAndPay(
        Auction memory m,
        address account,
        address holder,
        uint256 fill,
        int256 amount,
        uint256 penaltyWad,
        bool fromFund
    ) private returns (uint256 penalty) {
        uint256 remaining = WAD - m.soldWad;
        uint256 share = fill == remaining ? WAD : Math.mulDiv(fill, WAD, remaining, Math.Rounding.Ceil);
        int256 payment = amount;
        if (amount > 0) {
            penalty = Math.mulDiv(uint256(amount), penaltyWad, WAD, Math.Rounding.Ceil);
            m.escrow += (uint256(amount) - penalty).toUint128();
            m.penaltyTotal += penalty.toUint128();
            if (fromFund) {
                _fundSpend(m.id, holder, uint256(amount));
                payment = 0;
            }
        } else if (amount < 0) {
            uint256 owed = uint256(-amount);
            uint256 fromEscrow = owed < m.escrow ? owed : m.escrow;
            m.escrow -= uint128(fromEscrow);
            payment = -(fromEscrow + _fundCoverShortfall(m.id, holder, owed - fromEscrow)).toInt256();
        }
        // the claim and the cash in one core call (the module is trusted by the core with its own cash)
        m.expectedNonce = clearinghouse.recordClaim(account, holder, share, payment);
    }

    function _emitBid(Auction memory m, address account, int256 price_, uint256 fill, int256 amount, uint256 penalty)
        private
    {
        emit Bid(
            m.id, account, msg.sender, price_, fill, amount, penalty, m.soldWad, m.escrow, _fundBalance,
            _outstandingDebt
        );
    }
}
