// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {MarginProof} from "../libraries/BackstopTypes.sol";
import {IClearinghouse} from "../interfaces/IClearinghouse.sol";
import {ILiquidationAuction} from "../auction/interfaces/ILiquidationAuction.sol";

/// @title HookBidder
/// @notice Test-only bidder contract for review finding L-6: when the quote token calls it back during its own bid's
/// deposit pull (`onHook`), it withdraws all its `collateral` from the clearinghouse. The bid must see the book as
/// it is after that withdrawal.
contract HookBidder {
    // ------------------------------------------------------------------ immutables

    IClearinghouse public immutable clearinghouse;
    ILiquidationAuction public immutable auction;

    // ------------------------------------------------------------------ storage

    address public collateral;
    uint256 public collateralAmount;
    bool public hookRan;

    // ------------------------------------------------------------------ constructor

    constructor(IClearinghouse clearinghouse_, ILiquidationAuction auction_) {
        clearinghouse = clearinghouse_;
        auction = auction_;
    }

    // ------------------------------------------------------------------ external functions

    /// @notice Deposits `amount` of `token` (held by this contract) as collateral; `onHook` withdraws it all.
    function depositCollateral(address token, uint256 amount) external {
        IERC20(token).approve(address(clearinghouse), amount);
        clearinghouse.deposit(token, amount);
        (collateral, collateralAmount) = (token, amount);
    }

    /// @notice Approves `spender` (the auction) to pull `amount` of `token`.
    function approve(address token, address spender, uint256 amount) external {
        IERC20(token).approve(spender, amount);
    }

    /// @notice Bids with a same-call deposit.
    function bid(address account, uint256 maxFractionWad, int256 maxPrice, uint256 deadline, uint256 deposit)
        external
        returns (uint256 fractionWad, int256 amount)
    {
        return auction.bid(account, maxFractionWad, maxPrice, deadline, deposit);
    }

    /// @notice The call-back: withdraw every unit of collateral with an empty proof (an option-free account).
    function onHook() external {
        MarginProof memory empty;
        clearinghouse.withdraw(collateral, collateralAmount, empty);
        hookRan = true;
    }
}
