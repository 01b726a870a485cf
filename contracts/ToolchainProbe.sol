// SPDX-License-Identifier: MIT
pragma solidity 0.8.28;
import {Math} from "@openzeppelin/contracts/utils/math/Math.sol";
contract ToolchainProbe { function f(uint256 a) external view returns (uint256, uint256) { return (Math.mulDiv(a, 3, 2), block.chainid); } }
