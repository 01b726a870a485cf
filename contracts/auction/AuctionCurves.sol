// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";

/// @title AuctionCurves
/// @notice Dutch-auction price curves in the shapes of MakerDAO's abaci (LinearDecrease, ExponentialDecrease,
/// StairstepExponentialDecrease), generalised to signed start prices.
///
/// A curve is first reduced to a *factor* `c(t)` in RAY (1e27 = 1), non-increasing in the elapsed time `t`, with
/// `c(0) = RAY`:
///  - Linear(tau):            c(t) = RAY * (tau - t) / tau for t < tau, else 0            (rounded down)
///  - Exponential(cut):       c(t) = cut^t / RAY^(t-1), cut in RAY per second             (each product rounded down)
///  - Stairstep(step, cut):   c(t) = cut^floor(t/step) / RAY^(floor(t/step)-1)            (each product rounded down)
///
/// The price is then `price(t) = top - span * (RAY - c(t)) / RAY`, the discount rounded UP, so the price moves from
/// `top` in the bidder's favour by at most `span`. A positive `top` (the buyer pays) falls towards `top - span`; a
/// negative `top` (a liability the buyer is paid to take) becomes more negative, i.e. the payment TO the bidder
/// grows. With `span = |top|` and `top > 0` this is exactly Maker's `top * c(t)`. Every rounding step favours the
/// bidder (never the account being liquidated), as docs/ARCHITECTURE.md requires.
library AuctionCurves {
    // ------------------------------------------------------------------ types

    /// @notice Shape of the price decrease.
    enum Kind {
        Linear,
        Exponential,
        Stairstep
    }

    /// @notice A curve configuration. `tau` is used by Linear, `cut` by Exponential and Stairstep, `step` by Stairstep.
    struct Curve {
        Kind kind; // shape
        uint64 tau; // [seconds] until the linear discount reaches the full span
        uint64 step; // [seconds] per stair
        uint256 cut; // [ray] multiplier per second (Exponential) or per step (Stairstep), in (0, RAY]
    }

    // ------------------------------------------------------------------ constants

    /// @notice 1.0 in RAY fixed point.
    uint256 internal constant RAY = 1e27;

    // ------------------------------------------------------------------ errors

    /// @notice The curve parameters are unusable (zero tau/step, cut of zero or above one).
    error AC_InvalidCurve(uint8 kind, uint64 tau, uint64 step, uint256 cut);
    /// @notice A price or span does not fit the signed range used for prices.
    error AC_PriceOutOfRange(int256 top, uint256 span);

    // ------------------------------------------------------------------ internal functions

    /// @notice Reverts with {AC_InvalidCurve} if `curve` cannot be evaluated.
    function validate(Curve memory curve) internal pure {
        bool ok;
        if (curve.kind == Kind.Linear) ok = curve.tau > 0;
        else if (curve.kind == Kind.Exponential) ok = curve.cut > 0 && curve.cut <= RAY;
        else ok = curve.step > 0 && curve.cut > 0 && curve.cut <= RAY;
        if (!ok) revert AC_InvalidCurve(uint8(curve.kind), curve.tau, curve.step, curve.cut);
    }

    /// @notice The factor c(t) in RAY after `elapsed` seconds; RAY at t = 0, non-increasing, rounded down.
    function factor(Curve memory curve, uint256 elapsed) internal pure returns (uint256) {
        if (curve.kind == Kind.Linear) {
            if (elapsed >= curve.tau) return 0;
            return Math.mulDiv(RAY, curve.tau - elapsed, curve.tau, Math.Rounding.Floor);
        }
        if (curve.kind == Kind.Exponential) return rpow(curve.cut, elapsed);
        return rpow(curve.cut, elapsed / curve.step);
    }

    /// @notice Price after the curve factor `c` is applied: `top - ceil(span * (RAY - c) / RAY)`.
    /// @dev Moves in the bidder's favour (down) by at most `span`; the discount is rounded up.
    function priceAt(int256 top, uint256 span, uint256 c) internal pure returns (int256) {
        if (span > uint256(type(int256).max) / 2 || top > type(int256).max / 2 || top < type(int256).min / 2) {
            revert AC_PriceOutOfRange(top, span);
        }
        uint256 discount = Math.mulDiv(span, RAY - c, RAY, Math.Rounding.Ceil);
        return top - int256(discount);
    }

    /// @notice Price of a curve with start price `top` and span `span` after `elapsed` seconds.
    function price(Curve memory curve, int256 top, uint256 span, uint256 elapsed) internal pure returns (int256) {
        return priceAt(top, span, factor(curve, elapsed));
    }

    /// @notice `x^n` in RAY fixed point (`x` in RAY), by binary exponentiation with every product rounded down,
    /// so the result never exceeds the exact value. Requires x <= RAY (guaranteed by {validate}).
    function rpow(uint256 x, uint256 n) internal pure returns (uint256 z) {
        z = RAY;
        while (n > 0) {
            if (n & 1 == 1) z = Math.mulDiv(z, x, RAY, Math.Rounding.Floor);
            n >>= 1;
            if (n > 0) x = Math.mulDiv(x, x, RAY, Math.Rounding.Floor);
            if (z == 0) break;
        }
    }
}
