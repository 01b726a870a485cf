// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {AuctionCurves} from "../auction/AuctionCurves.sol";

/// @title AuctionCurvesHarness
/// @notice Test-only contract exposing {AuctionCurves} so tests can compare it with keeper/auction_math.py.
contract AuctionCurvesHarness {
    // ------------------------------------------------------------------ external views

    /// @notice c(t) in RAY for the given curve.
    function factor(uint8 kind, uint64 tau, uint64 step, uint256 cut, uint256 elapsed) external pure returns (uint256) {
        AuctionCurves.Curve memory c = AuctionCurves.Curve(AuctionCurves.Kind(kind), tau, step, cut);
        AuctionCurves.validate(c);
        return AuctionCurves.factor(c, elapsed);
    }

    /// @notice Price of the curve with start `top` and span `span` after `elapsed` seconds.
    function price(uint8 kind, uint64 tau, uint64 step, uint256 cut, int256 top, uint256 span, uint256 elapsed)
        external
        pure
        returns (int256)
    {
        AuctionCurves.Curve memory c = AuctionCurves.Curve(AuctionCurves.Kind(kind), tau, step, cut);
        AuctionCurves.validate(c);
        return AuctionCurves.price(c, top, span, elapsed);
    }
}
