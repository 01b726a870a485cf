// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title AuctionTestToken
/// @notice Test-only ERC20 with settable decimals, open minting and an optional one-shot re-entry hook: when armed,
/// the next `transferFrom` first calls `hookTarget` with `hookData` and records whether that call succeeded and
/// what it returned (it does not bubble the failure), so tests can see a re-entrant bid being refused.
contract AuctionTestToken is ERC20 {
    // ------------------------------------------------------------------ immutables

    uint8 private immutable _decimals;

    // ------------------------------------------------------------------ storage

    address public hookTarget;
    bytes public hookData;
    bool public hookCalled;
    bool public hookSucceeded;
    bytes public hookReturn;

    // ------------------------------------------------------------------ constructor

    constructor(string memory name_, string memory symbol_, uint8 decimals_) ERC20(name_, symbol_) {
        _decimals = decimals_;
    }

    // ------------------------------------------------------------------ external functions

    /// @notice Mints `amount` to `to` (test only).
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Arms the one-shot hook for the next `transferFrom`.
    function armHook(address target, bytes calldata data) external {
        hookTarget = target;
        hookData = data;
        hookCalled = false;
    }

    // ------------------------------------------------------------------ public functions

    /// @notice Token decimals.
    function decimals() public view override returns (uint8) {
        return _decimals;
    }

    /// @notice ERC20 transferFrom, calling the armed hook first.
    function transferFrom(address from, address to, uint256 value) public override returns (bool) {
        address target = hookTarget;
        if (target != address(0)) {
            hookTarget = address(0);
            hookCalled = true;
            (hookSucceeded, hookReturn) = target.call(hookData);
        }
        return super.transferFrom(from, to, value);
    }
}
