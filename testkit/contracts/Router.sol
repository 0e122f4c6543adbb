// SPDX-License-Identifier: Apache-2.0
// A payment router for Ferret's Ethereum scenarios (`ferret synth eth --typologies`).
// Compiled with solc 0.8.37 by build.sh; Router.bin beside this one is its output.
pragma solidity 0.8.37;

/// The part of an ERC-20 a router calls.
interface ITokenPull {
    function transferFrom(address from, address to, uint256 value) external returns (bool);
}

/// A payment router (as DEX routers and payment processors are): the owner approves it
/// once, then each payment is the owner's own call, in which the router pulls the tokens
/// with `transferFrom`. The legitimate use of approvals that approval phishing imitates.
contract Router {
    function pay(address token, address to, uint256 value) external {
        require(ITokenPull(token).transferFrom(msg.sender, to, value), "pull failed");
    }
}
