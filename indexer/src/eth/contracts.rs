//! The contracts of Ethereum scenarios and tests (source: `indexer/contracts/Ferret.sol`,
//! compiled by `indexer/contracts/build.sh` with solc 0.8.37): an ERC-20 stablecoin, an
//! ERC-721, and a splitter that moves ETH through internal calls.

use alloy::primitives::Bytes;

alloy::sol! {
    /// FerretUSD, an ERC-20 with 6 decimals.
    interface IFerretUSD {
        function mint(address to, uint256 value) external;
        function transfer(address to, uint256 value) external returns (bool);
        function transferFrom(address from, address to, uint256 value) external returns (bool);
        function approve(address spender, uint256 value) external returns (bool);
        function balanceOf(address who) external view returns (uint256);
    }

    /// FerretNFT, an ERC-721.
    interface IFerretNFT {
        function mint(address to, uint256 tokenId) external;
        function transferFrom(address from, address to, uint256 tokenId) external;
    }

    /// Splitter: ETH in, internal transfers out.
    interface ISplitter {
        function split(address[] to) external payable;
        function forwardAndTry(address to, address other) external payable;
    }
}

fn code(hex: &str) -> Bytes {
    alloy::primitives::hex::decode(hex.trim())
        .expect("checked-in bytecode is hex")
        .into()
}

/// Creation bytecode of FerretUSD.
pub fn ferret_usd() -> Bytes {
    code(include_str!("../../contracts/FerretUSD.bin"))
}

/// Creation bytecode of FerretNFT.
pub fn ferret_nft() -> Bytes {
    code(include_str!("../../contracts/FerretNFT.bin"))
}

/// Creation bytecode of Splitter.
pub fn splitter() -> Bytes {
    code(include_str!("../../contracts/Splitter.bin"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn bytecode_decodes() {
        for c in [super::ferret_usd(), super::ferret_nft(), super::splitter()] {
            // Solidity creation code starts with the free-memory-pointer set-up.
            assert_eq!(&c[..3], &[0x60, 0x80, 0x60]);
        }
    }
}
