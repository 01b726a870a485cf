// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {AuctionCurves} from "../AuctionCurves.sol";
import {IInsuranceFund} from "./IInsuranceFund.sol";
import {IExpiringPause} from "../../interfaces/IExpiringPause.sol";
import {IClearinghouse} from "../../interfaces/IClearinghouse.sol";

/// @title ILiquidationAuction
/// @notice Types, events, errors and functions of {LiquidationAuction}, the Dutch liquidation auction and insurance
/// fund (prefix `LA_`; the fund's are `IF_`, the pause's `EP_`, the curve library's `AC_`). {LiquidationAuction}
/// implements it, so the compiler checks that every function named here exists; the owner and pause entry points it
/// inherits (`Ownable2Step`, {ExpiringPause}) are in its artifact's ABI, which is the one ABI Python loads.
interface ILiquidationAuction is IInsuranceFund, IExpiringPause {
    // ------------------------------------------------------------------ types

    /// @notice Why an auction ended.
    enum EndReason {
        Restored, // the allowed fraction was sold: the account is back at MM * (1 + buffer)
        SoldOut, // everything was sold (insolvent auctions, or a solvent one that needed it all)
        Cured, // a fresh healthy attestation (plus escrow) reached the target
        CuredByDeposit // a deposit through {depositAndCure} covered the deficit
    }

    /// @notice Auction parameters (owner-set, bounded; each set is a new immutable version).
    struct Config {
        AuctionCurves.Kind kind; // curve shape
        uint32 tau; // [seconds] a linear curve takes to fall by the whole span
        uint32 step; // [seconds] per stair (Stairstep)
        uint128 cut; // [ray] multiplier per second (Exponential) or per step (Stairstep)
        uint32 tail; // [seconds] after which an auction must be reset from a fresh attestation
        uint64 cuspWad; // [wad] reset once the curve factor falls below this fraction
        uint64 bufferWad; // [wad] target = MM * (1 + buffer)
        uint64 penaltyWad; // [wad] penalty = ceil(proceeds * penalty)
        uint64 chipWad; // [wad] starter reward = tip + chip * MM, paid only out of penalties
        uint128 tip; // [quote base units] flat part of the starter reward
        uint32 maxRecordAge; // [seconds] freshness of breach and margin records used here
        uint64 spanWad; // [wad] span of the price = ceil(spanWad * MM) (never more than a solvent book's start price)
        uint8 lastResortAfter; // resets after which the fund's account takes the book at its floor (no more redo)
    }

    /// @notice A running auction, as returned by {auctionOf}.
    struct Auction {
        address starter; // who started it (earns the reward)
        uint64 startedAt; // [unix seconds] of the (re)start
        uint32 expectedNonce; // the account's stateNonce after the module's own last change
        int96 equity; // [quote base units] attested equity E of the breach record
        uint96 maintenance; // [quote base units] attested maintenance margin MM
        uint64 soldWad; // [wad] of the original book sold
        uint96 initial; // [quote base units] attested initial margin IM
        uint96 rewardPromised; // [quote base units] starter reward, paid out of penalties
        uint64 id; // auction id (from 1)
        uint128 escrow; // [quote base units] net proceeds held for the account
        uint128 penaltyTotal; // [quote base units] penalties collected
        bool done; // the bids sold what they may: only {finish} is left
        uint16 configVersion; // the immutable configuration the auction runs on (the one current at its start)
        int96 modelValue; // [quote base units] start price: attested model value V = E + haircut taken off collateral
        uint96 span; // [quote base units] how far the price may move from `modelValue`: ceil(spanWad * MM), <= V >= 0
        uint8 resets; // redos since the start (the buyer of last resort comes after `lastResortAfter` of them)
    }

    // ------------------------------------------------------------------ events

    /// @notice Parameters changed: auctions started from now on use them.
    event ConfigSet(Config config);
    /// @notice The configuration new auctions use is now `version`.
    event ConfigVersionSet(uint16 indexed version);
    /// @notice `payer` added `amount` [quote base units] to the escrow of auction `id` (a partial top-up: it lowers the
    /// deficit and so what may be sold, and goes back to the account when the auction ends).
    event ToppedUp(
        uint256 indexed id, address indexed account, address indexed payer, uint256 amount, uint256 escrow, int256 deficit
    );
    /// @notice An auction started for `account` from its breach record (values [quote base units]).
    event AuctionStarted(
        uint256 indexed id,
        address indexed account,
        address indexed starter,
        int256 equity,
        uint256 maintenance,
        uint256 initial,
        int256 startPrice,
        uint256 span,
        uint256 target,
        uint256 rewardPromised,
        uint32 stateNonce
    );
    /// @notice A running auction restarted from a fresh breach record (a redo).
    event AuctionReset(
        uint256 indexed id,
        address indexed account,
        address indexed caller,
        int256 equity,
        uint256 maintenance,
        uint256 initial,
        int256 startPrice,
        uint256 span,
        uint256 target,
        uint256 escrow,
        uint32 stateNonce
    );
    /// @notice A bid bought `fractionWad` of the original portfolio at `price` (per whole portfolio) [quote base
    /// units].
    event Bid(
        uint256 indexed id,
        address indexed account,
        address indexed bidder,
        int256 price,
        uint256 fractionWad,
        int256 amount,
        uint256 penalty,
        uint256 soldWad,
        uint256 escrow,
        uint256 fundBalance,
        uint256 deficit
    );
    /// @notice The bid of auction `id` completed the sale (`reason`: SoldOut or Restored, what {finish} will record):
    /// bids, resets and cures are over, {finish} ends the auction.
    event SaleCompleted(uint256 indexed id, address indexed account, EndReason reason, uint256 soldWad, uint256 escrow);
    /// @notice An auction ended; `escrowReleased` went to the account, `reward` to the starter, the rest of the
    /// penalty to the fund.
    event AuctionEnded(
        uint256 indexed id,
        address indexed account,
        EndReason reason,
        uint256 soldWad,
        uint256 escrowReleased,
        uint256 penalty,
        uint256 reward,
        uint256 fundBalance,
        uint256 deficit
    );

    /// @notice The fund's account (`fundAccount`) took what is left of `account`'s book at its fresh attested model
    /// value `price` (per whole remaining book): it bought `fractionWad` of it for `amount` [quote base units] paid from
    /// the fund's free balance (negative: paid to the fund's account from escrow, then the fund); `fundBalance` after.
    event LastResortTaken(
        uint256 indexed id,
        address indexed account,
        address indexed fundAccount,
        uint256 fractionWad,
        int256 price,
        int256 amount,
        uint256 fundBalance
    );
    /// @notice The account that holds what the buyer of last resort takes is now `fundAccount`.
    event FundAccountSet(address indexed fundAccount);

    // ------------------------------------------------------------------ errors

    /// @notice A parameter is outside its hard bounds.
    error LA_ParameterOutOfBounds(bytes32 name, uint256 value, uint256 min, uint256 max);
    /// @notice The account has no open breach record.
    error LA_NoBreach(address account);
    /// @notice The breach record was attested for another portfolio (state nonce).
    error LA_StaleBreach(address account, uint32 attested, uint32 current);
    /// @notice The breach record (or margin record) is older than `maxRecordAge`.
    error LA_RecordExpired(address account, uint256 timestamp, uint256 maxAge);
    /// @notice The attestation shows the account is not below maintenance margin.
    error LA_NotBreached(address account, int256 equity, uint256 maintenance);
    /// @notice An auction for the account is already running.
    error LA_AuctionRunning(address account, uint256 id);
    /// @notice No auction is running for the account.
    error LA_NoAuction(address account);
    /// @notice The bid's deadline has passed.
    error LA_BidExpired(uint256 deadline, uint256 timestamp);
    /// @notice The current price is worse for the bidder than its limit.
    error LA_PriceAboveLimit(int256 price, int256 maxPrice);
    /// @notice The auction ran past `tail` or its price passed the floor: it must be reset with {redo}.
    error LA_AuctionNeedsReset(address account, uint256 elapsed, uint256 factorRay);
    /// @notice The account changed outside the auction since it was attested: {cure} or {redo} first.
    error LA_AccountChanged(address account, uint32 expected, uint32 current);
    /// @notice A redo was asked while the auction is still within its tail and floor and the account unchanged.
    error LA_ResetNotNeeded(address account);
    /// @notice Nothing may be sold (zero fraction requested or allowed).
    error LA_NothingToSell(address account);
    /// @notice An insolvent auction sells everything left in one bid.
    error LA_MustBuyWhole(uint256 requestedWad, uint256 remainingWad);
    /// @notice The latest attestation of the account's current portfolio shows it at or above maintenance margin.
    error LA_AccountHealthy(address account, int256 equity, uint256 maintenance);
    /// @notice A bidder cannot buy from itself.
    error LA_SelfBid(address account);
    /// @notice The bidder has neither a fresh margin record nor an option-free account.
    error LA_BidderMarginUnknown(address bidder);
    /// @notice The bidder would not keep `required` of headroom above maintenance after the bid.
    error LA_BidderUndermargined(address bidder, int256 headroom, int256 required);
    /// @notice The fresh margin record does not reach the target.
    error LA_NotCured(address account, int256 equityWithEscrow, uint256 target);
    /// @notice The deposit does not cover the account's remaining deficit.
    error LA_DepositBelowDeficit(uint256 amount, int256 deficit);
    /// @notice Zero amount.
    error LA_ZeroAmount();
    /// @notice The bids already sold what they may: only {finish} is left.
    error LA_AuctionDone(address account, uint256 id);
    /// @notice The curve would reach the floor within `minDescent` seconds (factor `factorRay` by then).
    error LA_CurveTooSteep(uint256 factorRay, uint256 minDescent);
    /// @notice No configuration `version` exists.
    error LA_UnknownConfigVersion(uint16 version);
    /// @notice The auction has not sold what it may yet (`soldWad` of the book, remaining deficit `deficit`).
    error LA_AuctionNotDone(address account, uint256 soldWad, int256 deficit);
    /// @notice The auction reached its floor or tail after `resets` resets: the buyer of last resort takes it
    /// ({takeAsLastResort}), no further reset.
    error LA_LastResortDue(address account, uint256 resets);
    /// @notice The buyer of last resort may act only at the floor or tail after `lastResortAfter` resets.
    error LA_LastResortNotDue(address account, uint256 elapsed, uint256 resets, uint256 lastResortAfter);
    /// @notice The fund account cannot be the zero address or the module.
    error LA_InvalidFundAccount(address fundAccount);
    /// @notice The fund's free balance cannot pay `amount` for the book.
    error LA_FundCannotPay(uint256 amount, uint256 fundBalance);

    // ------------------------------------------------------------------ external functions

    /// @notice Sets the auction parameters as a new configuration version (owner; a timelock in every deployment).
    function setConfig(Config calldata config_) external;

    /// @notice Starts an auction for `account` from its fresh breach record; returns its id.
    function start(address account) external returns (uint256 id);

    /// @notice Restarts a running auction from a fresh breach record (past `tail`, below the floor, account changed,
    /// or turned insolvent) at the fresh model value; refused with {LA_LastResortDue} when the buyer of last resort is
    /// due and the fund can pay.
    function redo(address account) external;

    /// @notice The buyer of last resort: once the auction reached its floor or tail after `lastResortAfter` resets,
    /// the fund's account takes what restores the account (everything when insolvent) at the fresh attested model
    /// value, paid from the fund's free balance; the auction then ends. Anyone may call.
    function takeAsLastResort(address account) external;

    /// @notice Sets the account that holds what the buyer of last resort takes (owner; a timelock in every deployment).
    function setFundAccount(address fundAccount_) external;

    /// @notice Buys up to `maxFractionWad` of `account`'s original book at the current price, at most `maxPrice` (per
    /// whole book [quote base units]) until `deadline`, with `deposit` quote units pulled from the bidder first.
    function bid(address account, uint256 maxFractionWad, int256 maxPrice, uint256 deadline, uint256 deposit)
        external
        returns (uint256 fractionWad, int256 amount);

    /// @notice Ends an auction whose bids sold what they may.
    function finish(address account) external;

    /// @notice Ends the auction when a fresh margin record plus escrow reaches the target.
    function cure(address account) external;

    /// @notice Deposits `amount` (covering the deficit) into `account` and ends its auction.
    function depositAndCure(address account, uint256 amount) external;

    /// @notice Adds `amount` to the escrow of `account`'s running auction.
    function topUp(address account, uint256 amount) external;

    /// @notice Adds `amount` quote units (pulled from the caller) to the insurance fund; repays bad debt first.
    function fundDeposit(uint256 amount) external;

    // ------------------------------------------------------------------ external views

    /// @notice Lowest floor a configuration may set [wad].
    function MIN_CUSP() external view returns (uint256);

    /// @notice No curve may reach its floor sooner than this after a (re)start [seconds].
    function MIN_DESCENT() external view returns (uint256);

    /// @notice The clearinghouse this module liquidates for.
    function clearinghouse() external view returns (IClearinghouse);

    /// @notice The clearinghouse's quote asset.
    function quoteAsset() external view returns (IERC20);

    /// @notice Version of the configuration new auctions start on.
    function configVersion() external view returns (uint16);

    /// @notice Number of auctions ever started (ids start at 1).
    function auctionCount() external view returns (uint64);

    /// @notice Current parameters (those new auctions start on).
    function config() external view returns (Config memory);

    /// @notice The parameters of configuration `version`.
    function configAt(uint16 version) external view returns (Config memory);

    /// @notice The running auction of `account` (all zero if none).
    function auctionOf(address account) external view returns (Auction memory);

    /// @notice Current price (per whole original book) [quote base units], the fraction a bid may buy now [wad], the
    /// curve factor [ray] and whether the auction must be reset first (or, when {lastResortDue}, taken by the fund's
    /// account).
    function quote(address account)
        external
        view
        returns (int256 price_, uint256 allowedWad, uint256 factorRay, bool needsReset);

    /// @notice The account that holds what the buyer of last resort takes (zero: none).
    function fundAccount() external view returns (address);

    /// @notice Whether the auction of `account` is at its floor or tail after `lastResortAfter` resets with a fund
    /// account set: {redo} is refused (unless the fund cannot pay) and {takeAsLastResort} takes the book.
    function lastResortDue(address account) external view returns (bool);

    /// @notice Remaining deficit `ceil((1 - S)(T - E)) - C` of the running auction [quote base units] (<= 0: restored).
    function deficitOf(address account) external view returns (int256);
}
