// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {AssetConfig, Series} from "./BackstopTypes.sol";

/// @title FallbackMarginLogic
/// @notice The price-free margin that governs exits once keepers have been silent for `FALLBACK_DELAY`
/// (docs/contracts.md, "exit when keepers stop"). An external library linked into `ClearinghouseAdmin` (as Aave v3
/// links its logic libraries) and run on the Clearinghouse's storage, off every hot path.
library FallbackMarginLogic {
    using SafeCast for uint256;

    // ------------------------------------------------------------------ constants

    uint256 internal constant WAD = 1e18;

    // ------------------------------------------------------------------ external views

    /// @notice The fallback margin of `account` [quote base units]: what it holds that no open position can need,
    /// without any price. Quote cash minus, for every short put, strike x size (its largest possible payoff); short
    /// calls must be covered by the same number of units of their underlying held as collateral (one unit covers one
    /// call of any strike on it), otherwise the result is `type(int256).min`. Long positions and other collateral
    /// count for nothing.
    /// @param cash The clearinghouse's quote cash by account [quote base units].
    /// @param seriesOf Series each account holds.
    /// @param positions Signed positions by account and series [wad contracts].
    /// @param series Series definitions.
    /// @param assetConfig Collateral configuration by asset.
    /// @param collateral Collateral balances by account and asset [token base units].
    /// @param account The account.
    /// @param quoteUnit 10^decimals of the quote asset.
    function fallbackMargin(
        mapping(address => int256) storage cash,
        mapping(address => uint256[]) storage seriesOf,
        mapping(address => mapping(uint256 => int256)) storage positions,
        mapping(uint256 => Series) storage series,
        mapping(address => AssetConfig) storage assetConfig,
        mapping(address => mapping(address => uint256)) storage collateral,
        address account,
        uint256 quoteUnit
    ) external view returns (int256 margin) {
        margin = cash[account];
        uint256[] storage ids = seriesOf[account];
        uint256 n = ids.length;
        address[] memory underlyings = new address[](n);
        uint256[] memory calls = new uint256[](n); // [wad contracts] short calls per underlying
        for (uint256 i; i < n; ++i) {
            int256 size = positions[account][ids[i]];
            if (size >= 0) continue;
            Series memory s = series[ids[i]];
            uint256 units = uint256(-size);
            if (!s.isCall) {
                // rounded up: against the account
                uint256 liability = Math.mulDiv(Math.mulDiv(units, s.strike, WAD, Math.Rounding.Ceil), quoteUnit, WAD,
                    Math.Rounding.Ceil);
                margin -= liability.toInt256();
                continue;
            }
            for (uint256 j; j < n; ++j) {
                if (underlyings[j] == s.underlying || underlyings[j] == address(0)) {
                    (underlyings[j], calls[j]) = (s.underlying, calls[j] + units);
                    break;
                }
            }
        }
        for (uint256 j; j < n && underlyings[j] != address(0); ++j) {
            address u = underlyings[j];
            AssetConfig memory cfg = assetConfig[u];
            // token base units -> wad units of the underlying, rounded down: against the account
            uint256 held = cfg.listed ? Math.mulDiv(collateral[account][u], WAD, 10 ** cfg.decimals) : 0;
            if (held < calls[j]) return type(int256).min;
        }
    }
}
