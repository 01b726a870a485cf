// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {MarginProof} from "../../libraries/BackstopTypes.sol";

interface IHookClearinghouse {
    function deposit(address asset, uint256 amount) external;
    function withdraw(address asset, uint256 amount, MarginProof calldata margin) external;
}

interface IHookAuction {
    function bid(address account, uint256 maxFractionWad, int256 maxPrice, uint256 deadline, uint256 deposit)
        external
        returns (uint256 fractionWad, int256 amount);
}

/// @title HookBidder
/// @notice Test-only bidder contract for review finding L-6: when the quote token calls it back during its own bid's
/// deposit pull (`onHook`), it withdraws all its `collateral` from the clearinghouse. The bid must see the book as
/// it is after that withdrawal.
contract HookBidder {
    IHookClearinghouse public immutable clearinghouse;
    IHookAuction public immutable auction;
    address public collateral;
    uint256 public collateralAmount;
    bool public hookRan;

    constructor(IHookClearinghouse clearinghouse_, IHookAuction auction_) {
        clearinghouse = clearinghouse_;
        auction = auction_;
    }

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
