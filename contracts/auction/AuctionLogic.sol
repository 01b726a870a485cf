// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

import {AuctionCurves} from "./AuctionCurves.sol";
import {ILiquidationAuction} from "./interfaces/ILiquidationAuction.sol";
import {IClearinghouse} from "../interfaces/IClearinghouse.sol";
import {AssetConfig} from "../libraries/BackstopTypes.sol";

/// @title AuctionLogic
/// @notice The parts of {LiquidationAuction} off the bid path, in an external library linked into it (to keep the
/// module under the EIP-170 size limit): the configuration's bounds, the haircut an auction's start price adds back
/// to the attested equity, and the claim settlement of the buyer of last resort. Called only by `setConfig`, when an
/// auction (re)starts, and when the buyer of last resort acts.
library AuctionLogic {
    uint256 internal constant WAD = 1e18;
    uint256 internal constant RAY = 1e27;
    uint256 internal constant RAY_PER_WAD = 1e9;
    uint256 internal constant MAX_PENALTY = 0.25e18;
    uint256 internal constant MAX_CHIP = 0.05e18;
    uint256 internal constant MAX_BUFFER = 1e18;
    uint256 internal constant MIN_TAIL = 60;
    uint256 internal constant MAX_TAIL = 7 days;
    uint256 internal constant MIN_RECORD_AGE = 5;
    uint256 internal constant MAX_RECORD_AGE = 3600;
    uint256 internal constant MAX_LAST_RESORT_AFTER = 16;
    /// @notice Lowest floor a configuration may set [wad] ({LiquidationAuction-MIN_CUSP}).
    uint256 internal constant MIN_CUSP = 0.1e18;
    /// @notice No curve may reach its floor sooner than this after a (re)start [seconds].
    uint256 internal constant MIN_DESCENT = 300;

    /// @notice Reverts with `LA_ParameterOutOfBounds` or `LA_CurveTooSteep` unless every field of `c` is within its
    /// hard bounds (docs/auctions.md "Parameters"); the caller has checked the curve (`AuctionCurves.validate`).
    /// @param c The configuration {LiquidationAuction-setConfig} is asked to set.
    function checkConfig(ILiquidationAuction.Config memory c) external pure {
        AuctionCurves.Curve memory curve = AuctionCurves.Curve(c.kind, c.tau, c.step, c.cut); // validated by the caller
        _bound("tail", c.tail, MIN_TAIL, MAX_TAIL);
        _bound("cusp", c.cuspWad, MIN_CUSP, WAD - 1);
        // no curve may fall to its floor within MIN_DESCENT seconds of a (re)start
        uint256 f = AuctionCurves.factor(curve, MIN_DESCENT);
        if (f < uint256(c.cuspWad) * RAY_PER_WAD) revert ILiquidationAuction.LA_CurveTooSteep(f, MIN_DESCENT);
        _bound("buffer", c.bufferWad, 0, MAX_BUFFER);
        _bound("penalty", c.penaltyWad, 0, MAX_PENALTY);
        _bound("chip", c.chipWad, 0, MAX_CHIP);
        _bound("maxRecordAge", c.maxRecordAge, MIN_RECORD_AGE, MAX_RECORD_AGE);
        _bound("cut", c.cut, 0, RAY);
        _bound("span", c.spanWad, 1, WAD);
        _bound("lastResortAfter", c.lastResortAfter, 0, MAX_LAST_RESORT_AFTER);
    }

    /// @notice `sum over the account's effective collateral of floor(haircut * floor(amount * spot))` in quote base
    /// units, at the core's stored spot prices, each gross value rounded down as the core values collateral.
    /// @param ch The clearinghouse.
    /// @param account The account.
    /// @param quoteUnit Quote base units per whole quote unit (10^decimals).
    /// @return sum [quote base units] The haircut taken off the account's collateral.
    function haircutValue(IClearinghouse ch, address account, uint256 quoteUnit) external view returns (uint256 sum) {
        address[] memory assets = ch.collateralAssetsOf(account);
        for (uint256 i; i < assets.length; ++i) {
            address asset = assets[i];
            AssetConfig memory c = ch.assetConfig(asset);
            if (c.haircut == 0) continue;
            uint256 amount = ch.collateralOf(account, asset);
            (uint256 spot,) = ch.spotPrice(asset);
            uint256 gross = Math.mulDiv(
                Math.mulDiv(amount, spot, 10 ** c.decimals, Math.Rounding.Floor), quoteUnit, WAD, Math.Rounding.Floor
            );
            sum += Math.mulDiv(gross, c.haircut, WAD, Math.Rounding.Floor);
        }
    }

    /// @notice Settles `holder`'s unsettled claim if it is on a book other than `account`'s (a holder may hold a claim
    /// on one book at a time).
    /// @param ch The clearinghouse.
    /// @param holder The claim holder (the fund's account).
    /// @param account The book it is about to take a claim on.
    function settleOtherClaim(IClearinghouse ch, address holder, address account) external {
        (address source, uint256 pending,) = ch.claimOf(holder);
        if (pending != 0 && source != account) ch.settleClaim(holder);
    }

    function _bound(bytes32 name, uint256 value, uint256 min, uint256 max) private pure {
        if (value < min || value > max) revert ILiquidationAuction.LA_ParameterOutOfBounds(name, value, min, max);
    }
}
