// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {AttestationOracle} from "./AttestationOracle.sol";
import {IClearinghouseBase} from "./interfaces/IClearinghouseBase.sol";
import {AssetConfig} from "./libraries/BackstopTypes.sol";

/// @title CollateralVault
/// @notice Multi-asset ERC20 collateral with per-asset haircut and deposit cap. The deployment's quote asset is
/// held as signed cash (premiums, settlement and liquidation move it); other assets as unsigned balances.
/// @dev Fee-on-transfer and rebasing tokens are not supported (listing is owner-gated). Value transfers are
/// `nonReentrant` in the final contract and follow checks-effects-interactions.
abstract contract CollateralVault is AttestationOracle, IClearinghouseBase {
    using SafeERC20 for IERC20;
    using SafeCast for uint256;

    // ------------------------------------------------------------------ constants

    uint256 internal constant WAD = 1e18;
    uint256 public constant MAX_HAIRCUT = 0.9e18;
    uint8 public constant MAX_DECIMALS = 18;
    uint256 public constant MAX_ASSETS_PER_ACCOUNT = 16;

    // ------------------------------------------------------------------ immutables

    /// @notice The deployment's quote asset: all values (equity, margins, premiums, cash) are in its base units.
    address public immutable quoteAsset;
    uint256 internal immutable _quoteUnit;

    // ------------------------------------------------------------------ storage

    address public riskAdmin;
    mapping(address asset => AssetConfig) internal _assetConfig;
    mapping(address asset => uint256) public totalDeposits;
    mapping(address account => mapping(address asset => uint256)) internal _collateral;
    mapping(address account => int256) internal _cash;
    mapping(address account => address[]) internal _assetsOf;
    mapping(address account => mapping(address asset => uint256)) internal _assetIndex; // index + 1

    // ------------------------------------------------------------------ constructor

    constructor(address quoteAsset_, uint128 quoteDepositCap) {
        uint8 d = _readDecimals(quoteAsset_);
        quoteAsset = quoteAsset_;
        _quoteUnit = 10 ** d;
        _list(quoteAsset_, d, 0, quoteDepositCap);
    }

    // ------------------------------------------------------------------ internal functions

    /// @dev Reverts `CH_ParameterOutOfBounds` unless `min <= value <= max`.
    function _checkBounds(bytes32 name, uint256 value, uint256 min, uint256 max) internal pure {
        if (value < min || value > max) revert CH_ParameterOutOfBounds(name, value, min, max);
    }

    function _readDecimals(address token) internal view returns (uint8 d) {
        if (token.code.length == 0) revert CH_NotAContract(token);
        try IERC20Metadata(token).decimals() returns (uint8 dec) {
            d = dec;
        } catch {
            revert CH_DecimalsUnreadable(token);
        }
        if (d > MAX_DECIMALS) revert CH_DecimalsTooLarge(token, d);
    }

    function _checkAssetParams(address token, uint64 haircutWad, uint128 depositCap) internal view {
        uint256 maxHaircut = token == quoteAsset ? 0 : MAX_HAIRCUT;
        _checkBounds("haircut", haircutWad, 0, maxHaircut);
        _checkBounds("depositCap", depositCap, 1, type(uint128).max);
    }

    function _list(address token, uint8 d, uint64 haircutWad, uint128 depositCap) internal {
        _checkAssetParams(token, haircutWad, depositCap);
        _assetConfig[token] = AssetConfig({listed: true, decimals: d, haircut: haircutWad, depositCap: depositCap});
        emit CollateralListed(token, d, haircutWad, depositCap);
    }

    /// @dev Value in quote base units of `amount` token base units at WAD `price`.
    function _assetValue(uint256 amount, uint256 price, uint8 decimals, Math.Rounding r)
        internal
        view
        returns (uint256)
    {
        // amount / 10^decimals whole units x price / 1e18 quote units x quoteUnit base units
        return Math.mulDiv(Math.mulDiv(amount, price, 10 ** decimals, r), _quoteUnit, WAD, r);
    }

    /// @dev Converts a WAD amount of quote units to quote base units.
    function _wadToQuote(uint256 wadAmount, Math.Rounding r) internal view returns (uint256) {
        return Math.mulDiv(wadAmount, _quoteUnit, WAD, r);
    }

    /// @dev Credits quote cash (> 0) to `account`; overridden where credits to some accounts are held apart.
    function _creditCash(address account, int256 amount) internal virtual {
        _cash[account] += amount;
    }

    function _deposit(address account, address asset, uint256 amount) internal virtual {
        if (amount == 0) revert CH_ZeroAmount();
        if (account == address(0)) revert CH_ZeroAddress();
        AssetConfig memory cfg = _assetConfig[asset];
        if (!cfg.listed) revert CH_AssetNotListed(asset);
        uint256 total = totalDeposits[asset] + amount;
        if (total > cfg.depositCap) revert CH_DepositCapExceeded(asset, total, cfg.depositCap);
        totalDeposits[asset] = total;
        if (asset == quoteAsset) {
            // Quote cash only raises equity, by exactly `amount`: every attestation of the book without it stays a
            // conservative one, so the stateNonce does not move. Dust deposits therefore cannot make the keepers'
            // pending leaves stale (review finding H-1). Only an account's very first deposit moves it (0 -> 1),
            // which creates the record slot so that the keepers' first attestation overwrites it (an account at
            // nonce 0 has never traded: no leaf of it can be worth defeating).
            _creditCash(account, amount.toInt256());
            if (_accounts[account].stateNonce == 0) _bumpNonce(account);
        } else {
            _addCollateral(account, asset, amount, true);
            _bumpNonce(account);
        }
        emit Deposited(account, asset, amount, msg.sender);
        IERC20(asset).safeTransferFrom(msg.sender, address(this), amount);
    }

    /// @dev Debits the account (balance, deposits total, stateNonce); paying out and margin checks are the caller's.
    function _debit(address account, address asset, uint256 amount) internal {
        if (asset == quoteAsset) {
            int256 cash = _cash[account];
            if (cash < amount.toInt256()) revert CH_InsufficientCash(account, cash, amount);
            _cash[account] = cash - int256(amount);
        } else {
            if (!_assetConfig[asset].listed) revert CH_AssetNotListed(asset);
            _subCollateral(account, asset, amount);
        }
        uint256 held = totalDeposits[asset];
        // quote cash can exceed what the contract holds while other accounts owe (negative cash)
        if (held < amount) revert CH_InsufficientLiquidity(asset, held, amount);
        totalDeposits[asset] = held - amount;
        _bumpNonce(account);
    }

    /// @dev `capped == false` lets a liquidation settlement go past the per-account asset cap.
    function _addCollateral(address account, address asset, uint256 amount, bool capped) internal {
        uint256 balance = _collateral[account][asset];
        if (balance == 0 && _assetIndex[account][asset] == 0) {
            if (capped && _assetsOf[account].length >= MAX_ASSETS_PER_ACCOUNT) revert CH_TooManyAssets(account);
            _assetsOf[account].push(asset);
            _assetIndex[account][asset] = _assetsOf[account].length;
        }
        _collateral[account][asset] = balance + amount;
    }

    function _subCollateral(address account, address asset, uint256 amount) internal {
        uint256 balance = _collateral[account][asset];
        if (balance < amount) revert CH_InsufficientCollateral(account, asset, balance, amount);
        unchecked {
            balance -= amount;
        }
        _collateral[account][asset] = balance;
        if (balance == 0) {
            address[] storage list = _assetsOf[account];
            uint256 idx = _assetIndex[account][asset] - 1;
            address last = list[list.length - 1];
            list[idx] = last;
            _assetIndex[account][last] = idx + 1;
            list.pop();
            delete _assetIndex[account][asset];
        }
    }
}
