//! The contracts of Ethereum scenarios and tests (source: `testkit/contracts/Ferret.sol`,
//! and `Router.sol`, compiled by `testkit/contracts/build.sh` with solc 0.8.37): an ERC-20
//! stablecoin, an ERC-721, a splitter that moves ETH through internal calls, and a payment
//! router that pulls approved tokens in the owner's own call.

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

    /// Router (`testkit/contracts/Router.sol`): pays with the caller's approved tokens.
    interface IRouter {
        function pay(address token, address to, uint256 value) external;
    }

    /// Pool (`testkit/contracts/Pool.sol`): an ETH/token pool logged as a Uniswap V2
    /// pair is.
    interface IPool {
        function swapExactETHForTokens(address to, uint256 minOut) external payable returns (uint256 out);
        function swapETHForExactTokens(uint256 out, address to) external payable returns (uint256 used);
        function swapExactTokensForETH(uint256 amountIn, address to) external returns (uint256 out);
        event Swap(address indexed sender, uint256 amount0In, uint256 amount1In, uint256 amount0Out, uint256 amount1Out, address indexed to);
        event TokenExchange(address indexed buyer, int128 sold_id, uint256 tokens_sold, int128 bought_id, uint256 tokens_bought);
    }

    /// Mixer (`testkit/contracts/Mixer.sol`): fixed-denomination deposits, withdrawals
    /// paid by a relayer.
    interface IMixer {
        function deposit(bytes32 commitment) external payable;
        function withdraw(address to, bytes32 nullifierHash) external;
    }
}

fn code(hex: &str) -> Bytes {
    alloy::primitives::hex::decode(hex.trim())
        .expect("checked-in bytecode is hex")
        .into()
}

/// Creation bytecode of FerretUSD.
pub fn ferret_usd() -> Bytes {
    code(include_str!("../contracts/FerretUSD.bin"))
}

/// Creation bytecode of FerretNFT.
pub fn ferret_nft() -> Bytes {
    code(include_str!("../contracts/FerretNFT.bin"))
}

/// Creation bytecode of Splitter.
pub fn splitter() -> Bytes {
    code(include_str!("../contracts/Splitter.bin"))
}

/// Creation bytecode of Router.
pub fn router() -> Bytes {
    code(include_str!("../contracts/Router.bin"))
}

/// The creation code of a mixer of `denomination` wei whose withdrawals `relayer` pays
/// (constructor arguments appended).
pub fn mixer(denomination: u128, relayer: alloy::primitives::Address) -> Bytes {
    let mut c = code(include_str!("../contracts/Mixer.bin")).to_vec();
    c.extend_from_slice(&[0u8; 16]);
    c.extend_from_slice(&denomination.to_be_bytes());
    c.extend_from_slice(&[0u8; 12]);
    c.extend_from_slice(relayer.as_slice());
    c.into()
}

/// The creation code of a pool between ETH and `token` (constructor arguments
/// appended), logging its swaps as a Uniswap V2 pair, or with `curve` as a Curve pool.
pub fn pool(token: alloy::primitives::Address, curve: bool) -> Bytes {
    let mut c = code(include_str!("../contracts/Pool.bin")).to_vec();
    c.extend_from_slice(&[0u8; 12]);
    c.extend_from_slice(token.as_slice());
    c.extend_from_slice(&[0u8; 31]);
    c.push(u8::from(curve));
    c.into()
}

#[cfg(test)]
mod tests {
    use alloy::sol_types::SolCall;

    use super::*;

    /// The checked-in bytecode dispatches on the selectors the interfaces above encode
    /// (so a stale .bin or a mistyped signature fails here, not on a node).
    #[test]
    fn bytecode_has_the_interfaces_selectors() {
        let has = |code: &Bytes, sel: [u8; 4]| code.windows(4).any(|w| w == sel);
        let usd = ferret_usd();
        for sel in [
            IFerretUSD::mintCall::SELECTOR,
            IFerretUSD::transferCall::SELECTOR,
            IFerretUSD::transferFromCall::SELECTOR,
            IFerretUSD::approveCall::SELECTOR,
            IFerretUSD::balanceOfCall::SELECTOR,
        ] {
            assert!(has(&usd, sel), "FerretUSD lacks {sel:02x?}");
        }
        let nft = ferret_nft();
        for sel in [
            IFerretNFT::mintCall::SELECTOR,
            IFerretNFT::transferFromCall::SELECTOR,
        ] {
            assert!(has(&nft, sel), "FerretNFT lacks {sel:02x?}");
        }
        assert!(
            has(&router(), IRouter::payCall::SELECTOR),
            "Router lacks pay"
        );
        let pool = pool(alloy::primitives::Address::ZERO, false);
        for sel in [
            IPool::swapExactETHForTokensCall::SELECTOR,
            IPool::swapETHForExactTokensCall::SELECTOR,
            IPool::swapExactTokensForETHCall::SELECTOR,
        ] {
            assert!(has(&pool, sel), "Pool lacks {sel:02x?}");
        }
        // The event is Uniswap V2's: the detector looks for this topic.
        use alloy::sol_types::SolEvent;
        assert!(
            pool.windows(32)
                .any(|w| w == IPool::Swap::SIGNATURE_HASH.as_slice()),
            "Pool does not emit Uniswap V2's Swap"
        );
        assert!(
            pool.windows(32)
                .any(|w| w == IPool::TokenExchange::SIGNATURE_HASH.as_slice()),
            "Pool does not emit Curve's TokenExchange"
        );
        let mx = mixer(1, alloy::primitives::Address::ZERO);
        for sel in [
            IMixer::depositCall::SELECTOR,
            IMixer::withdrawCall::SELECTOR,
        ] {
            assert!(has(&mx, sel), "Mixer lacks {sel:02x?}");
        }
        let sp = splitter();
        for sel in [
            ISplitter::splitCall::SELECTOR,
            ISplitter::forwardAndTryCall::SELECTOR,
        ] {
            assert!(has(&sp, sel), "Splitter lacks {sel:02x?}");
        }
        assert!(!has(&sp, IFerretUSD::mintCall::SELECTOR));
    }
}
