// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {CollateralVault} from "./CollateralVault.sol";
import {BackstopTypes, Quote, Series} from "./libraries/BackstopTypes.sol";

/// @title OptionBook
/// @notice Registry of cash-settled option series, signed positions per account, maker nonces, and settlement
/// at an attested settlement price. Sizes and prices in WAD; cash in quote base units.
abstract contract OptionBook is CollateralVault {
    using SafeCast for uint256;
    using SafeCast for int256;

    // ------------------------------------------------------------------ constants

    uint256 public constant MAX_POSITIONS_PER_ACCOUNT = 32;
    uint256 public constant MAX_EXPIRY_HORIZON = 730 days;
    uint256 public constant MAX_STRIKE = 1e36;

    // ------------------------------------------------------------------ storage

    /// @notice Number of series created; ids are 1..seriesCount.
    uint256 public seriesCount;
    /// @notice Sum over accounts of settlement rounding (long payouts round down, short payments round up):
    /// token balance of the quote asset == sum of cash + settlementReserve.
    int256 public settlementReserve;
    mapping(uint256 seriesId => Series) internal _series;
    mapping(address account => mapping(uint256 seriesId => int256)) internal _positions;
    mapping(address account => uint256[]) internal _seriesOf;
    mapping(address account => mapping(uint256 seriesId => uint256)) internal _seriesIndex; // index + 1
    mapping(address maker => mapping(uint256 nonce => bool)) internal _nonceUsed;

    // ------------------------------------------------------------------ internal functions

    function _intrinsic(uint256 seriesId) internal view returns (uint256 intrinsic, uint64 expiry) {
        Series memory s = _series[seriesId];
        expiry = s.expiry;
        if (expiry == 0) revert CH_UnknownSeries(seriesId);
        if (block.timestamp < expiry) revert CH_SeriesNotExpired(seriesId, expiry);
        uint256 px = _settlementPrice[s.underlying][expiry];
        if (px == 0) revert CH_SettlementPriceMissing(s.underlying, expiry);
        uint256 k = s.strike;
        if (s.isCall) intrinsic = px > k ? px - k : 0;
        else intrinsic = k > px ? k - px : 0;
    }

    function _settle(address account, uint256 seriesId, uint256 intrinsic) internal {
        int256 size = _positions[account][seriesId];
        // longs receive rounded down, shorts pay rounded up: rounding never favours the account
        Math.Rounding r = size > 0 ? Math.Rounding.Floor : Math.Rounding.Ceil;
        uint256 value = _wadToQuote(Math.mulDiv(_abs(size), intrinsic, WAD, r), r);
        int256 delta = size > 0 ? value.toInt256() : -value.toInt256();
        _cash[account] += delta;
        settlementReserve -= delta;
        _setPosition(account, seriesId, 0);
        // A book bound to a breach keeps its nonce: settlement turns a position into cash of the same book at the
        // settlement price, and must not invalidate the auction selling it (review finding H-1).
        if (!_inBreach(account)) _bumpNonce(account);
        emit Settled(account, seriesId, size, delta);
    }

    /// @dev Writes a position and keeps the account's series list in sync (within the position cap).
    function _setPosition(address account, uint256 seriesId, int256 newSize) internal {
        _setPosition(account, seriesId, newSize, true);
    }

    /// @dev As above; `capped == false` lets a liquidation settlement go past the cap.
    function _setPosition(address account, uint256 seriesId, int256 newSize, bool capped) internal {
        int256 old = _positions[account][seriesId];
        _positions[account][seriesId] = newSize;
        if (old == 0 && newSize != 0) {
            uint256[] storage list = _seriesOf[account];
            if (capped && list.length >= MAX_POSITIONS_PER_ACCOUNT) revert CH_TooManyPositions(account);
            list.push(seriesId);
            _seriesIndex[account][seriesId] = list.length;
        } else if (old != 0 && newSize == 0) {
            uint256[] storage list = _seriesOf[account];
            uint256 idx = _seriesIndex[account][seriesId] - 1;
            uint256 last = list[list.length - 1];
            list[idx] = last;
            _seriesIndex[account][last] = idx + 1;
            list.pop();
            delete _seriesIndex[account][seriesId];
        }
    }

    /// @dev Whether `account`'s book is bound to a breach record (see `LiquidationClaims`).
    function _inBreach(address account) internal view virtual returns (bool);

    function _abs(int256 x) internal pure returns (uint256) {
        return x >= 0 ? uint256(x) : uint256(-x);
    }
}
