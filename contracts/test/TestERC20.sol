// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @notice Test token with configurable decimals and open minting. Tests only.
contract TestERC20 is ERC20 {
    // ------------------------------------------------------------------ immutables

    uint8 private immutable _decimals;

    // ------------------------------------------------------------------ constructor

    constructor(string memory name_, string memory symbol_, uint8 decimals_) ERC20(name_, symbol_) {
        _decimals = decimals_;
    }

    // ------------------------------------------------------------------ external functions

    /// @notice Mint `amount` to `to` (anyone; tests only).
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    // ------------------------------------------------------------------ public functions

    /// @notice Token decimals as configured.
    function decimals() public view override returns (uint8) {
        return _decimals;
    }
}

/// @notice Token whose decimals() reverts. Tests only.
contract RevertingDecimalsToken is ERC20 {
    // ------------------------------------------------------------------ constructor

    constructor() ERC20("Broken", "BRK") {}

    // ------------------------------------------------------------------ public functions

    /// @notice Always reverts.
    function decimals() public pure override returns (uint8) {
        revert("no decimals");
    }
}
