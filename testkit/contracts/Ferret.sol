// SPDX-License-Identifier: Apache-2.0
// Contracts of Ferret's Ethereum scenarios and tests (`ferret synth eth`, indexer tests).
// Compiled with solc 0.8.37 by build.sh; the .bin files beside this one are its output.
pragma solidity 0.8.37;

/// A stablecoin like USDT/USDC: ERC-20 with 6 decimals, minted by its deployer.
contract FerretUSD {
    string public constant name = "Ferret USD";
    string public constant symbol = "fUSD";
    uint8 public constant decimals = 6;
    address public immutable minter;
    uint256 public totalSupply;
    mapping(address => uint256) public balanceOf;
    mapping(address => mapping(address => uint256)) public allowance;

    event Transfer(address indexed from, address indexed to, uint256 value);
    event Approval(address indexed owner, address indexed spender, uint256 value);

    constructor() {
        minter = msg.sender;
    }

    function mint(address to, uint256 value) external {
        require(msg.sender == minter, "only the minter mints");
        totalSupply += value;
        balanceOf[to] += value;
        emit Transfer(address(0), to, value);
    }

    function transfer(address to, uint256 value) external returns (bool) {
        _move(msg.sender, to, value);
        return true;
    }

    function approve(address spender, uint256 value) external returns (bool) {
        allowance[msg.sender][spender] = value;
        emit Approval(msg.sender, spender, value);
        return true;
    }

    function transferFrom(address from, address to, uint256 value) external returns (bool) {
        uint256 allowed = allowance[from][msg.sender];
        require(allowed >= value, "allowance exceeded");
        allowance[from][msg.sender] = allowed - value;
        _move(from, to, value);
        return true;
    }

    function _move(address from, address to, uint256 value) internal {
        require(balanceOf[from] >= value, "balance too low");
        balanceOf[from] -= value;
        balanceOf[to] += value;
        emit Transfer(from, to, value);
    }
}

/// A minimal ERC-721: token ids minted to anyone, moved by their owner.
contract FerretNFT {
    mapping(uint256 => address) public ownerOf;

    event Transfer(address indexed from, address indexed to, uint256 indexed tokenId);

    function mint(address to, uint256 tokenId) external {
        require(ownerOf[tokenId] == address(0), "already minted");
        ownerOf[tokenId] = to;
        emit Transfer(address(0), to, tokenId);
    }

    function transferFrom(address from, address to, uint256 tokenId) external {
        require(ownerOf[tokenId] == from && from == msg.sender, "not the owner");
        ownerOf[tokenId] = to;
        emit Transfer(from, to, tokenId);
    }
}

/// Moves ETH through internal calls, the way mixers, multisends and laundering contracts do.
contract Splitter {
    /// Sends msg.value in equal shares to `to` (the remainder of the division stays here).
    function split(address payable[] calldata to) external payable {
        require(to.length > 0, "no recipients");
        uint256 share = msg.value / to.length;
        for (uint256 i = 0; i < to.length; i++) {
            (bool ok, ) = to[i].call{value: share}("");
            require(ok, "send failed");
        }
    }

    /// Sends half of msg.value to `to`; the other half goes through `failingSend`, whose
    /// send to `other` is reverted while this transaction succeeds. The reverted internal
    /// calls moved no value and the half stays here.
    function forwardAndTry(address payable to, address payable other) external payable {
        uint256 half = msg.value / 2;
        (bool ok, ) = to.call{value: half}("");
        require(ok, "send failed");
        try this.failingSend{value: msg.value - half}(other) {} catch {}
    }

    function failingSend(address payable to) external payable {
        (bool ok, ) = to.call{value: msg.value}("");
        require(ok, "send failed");
        revert("always reverts after sending");
    }

    receive() external payable {}
}
