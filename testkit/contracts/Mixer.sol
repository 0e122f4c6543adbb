// SPDX-License-Identifier: Apache-2.0
// A fixed-denomination mixer for Ferret's Ethereum scenarios (`ferret synth eth --typologies`).
// Compiled with solc 0.8.37 by build.sh; Mixer.bin beside this one is its output.
pragma solidity 0.8.37;

/// Deposits of one denomination in, withdrawals of it out to any address, paid by a
/// relayer: the money-flow shape of a Tornado Cash pool (without its proofs). Its events
/// carry Tornado's names and arguments.
contract Mixer {
    uint256 public immutable denomination;
    address public immutable relayer;
    uint32 public nextIndex;

    event Deposit(bytes32 indexed commitment, uint32 leafIndex, uint256 timestamp);
    event Withdrawal(address to, bytes32 nullifierHash, address indexed relayer, uint256 fee);

    constructor(uint256 denomination_, address relayer_) {
        denomination = denomination_;
        relayer = relayer_;
    }

    function deposit(bytes32 commitment) external payable {
        require(msg.value == denomination, "wrong denomination");
        emit Deposit(commitment, nextIndex, block.timestamp);
        nextIndex += 1;
    }

    function withdraw(address payable to, bytes32 nullifierHash) external {
        require(msg.sender == relayer, "only the relayer");
        (bool ok, ) = to.call{value: denomination}("");
        require(ok, "payment failed");
        emit Withdrawal(to, nullifierHash, msg.sender, 0);
    }
}
