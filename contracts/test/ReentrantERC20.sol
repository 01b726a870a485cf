// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @notice Test token that, once armed, calls `target` with `payload` from inside every transfer (as a
/// malicious token or an ERC777-style hook would) and records whether that re-entrant call succeeded.
/// The transfer itself goes through either way, so the test can inspect the outcome. Tests only.
contract ReentrantERC20 is ERC20 {
    // ------------------------------------------------------------------ storage

    address public target;
    bytes public payload;
    bool public armed;
    uint256 public attempts;
    bool public lastSuccess;
    bytes public lastRevertData;

    // ------------------------------------------------------------------ constructor

    constructor() ERC20("Reentrant", "REN") {}

    // ------------------------------------------------------------------ external functions

    /// @notice Mint `amount` to `to` (anyone; tests only).
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }

    /// @notice Arm the hook: the next transfers call `target_` with `payload_`.
    function arm(address target_, bytes calldata payload_) external {
        target = target_;
        payload = payload_;
        armed = true;
    }

    // ------------------------------------------------------------------ internal functions

    function _update(address from, address to, uint256 value) internal override {
        if (armed) {
            armed = false; // one re-entry attempt per arming
            attempts += 1;
            (bool ok, bytes memory data) = target.call(payload);
            lastSuccess = ok;
            lastRevertData = data;
        }
        super._update(from, to, value);
    }
}
