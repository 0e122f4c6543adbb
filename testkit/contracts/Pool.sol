// SPDX-License-Identifier: Apache-2.0
// A constant-product pool for Ferret's Ethereum scenarios (`ferret synth eth --typologies`).
// Compiled with solc 0.8.37 by build.sh; Pool.bin beside this one is its output.
pragma solidity 0.8.37;

/// The part of an ERC-20 the pool calls.
interface IToken {
    function balanceOf(address who) external view returns (uint256);
    function transfer(address to, uint256 value) external returns (bool);
    function transferFrom(address from, address to, uint256 value) external returns (bool);
}

/// A pool between ETH (token0, held as ETH) and one ERC-20 (token1), priced as Uniswap V2
/// prices (x·y = k, 0.3% fee), emitting Uniswap V2's `Swap` and `Sync` events, so that
/// a swap on it is logged as a swap on a V2 pair is: the pool emits `Swap` and sends the
/// bought token itself. Reserves are what it holds. Built with `curve` set, it logs a
/// swap as a Curve pool does instead: `TokenExchange(buyer, sold_id, tokens_sold,
/// bought_id, tokens_bought)`, coin 0 being ETH and coin 1 the token.
contract Pool {
    IToken public immutable token;
    bool public immutable curve;

    event Swap(
        address indexed sender,
        uint256 amount0In,
        uint256 amount1In,
        uint256 amount0Out,
        uint256 amount1Out,
        address indexed to
    );
    event Sync(uint112 reserve0, uint112 reserve1);
    event TokenExchange(
        address indexed buyer,
        int128 sold_id,
        uint256 tokens_sold,
        int128 bought_id,
        uint256 tokens_bought
    );

    constructor(address token_, bool curve_) {
        token = IToken(token_);
        curve = curve_;
    }

    function _swapped(uint256 in0, uint256 in1, uint256 out0, uint256 out1, address to) internal {
        if (curve) {
            if (in0 > 0) {
                emit TokenExchange(msg.sender, 0, in0, 1, out1);
            } else {
                emit TokenExchange(msg.sender, 1, in1, 0, out0);
            }
        } else {
            emit Swap(msg.sender, in0, in1, out0, out1, to);
            _sync();
        }
    }

    function _sync() internal {
        emit Sync(uint112(address(this).balance), uint112(token.balanceOf(address(this))));
    }

    /// Sells all the ETH sent for tokens, paid to `to`.
    function swapExactETHForTokens(address to, uint256 minOut) external payable returns (uint256 out) {
        uint256 r0 = address(this).balance - msg.value;
        uint256 r1 = token.balanceOf(address(this));
        uint256 inFee = msg.value * 997;
        out = (inFee * r1) / (r0 * 1000 + inFee);
        require(out >= minOut && out > 0, "too little out");
        require(token.transfer(to, out), "transfer failed");
        _swapped(msg.value, 0, 0, out, to);
    }

    /// Buys exactly `out` tokens for `to`, refunding the ETH not needed.
    function swapETHForExactTokens(uint256 out, address to) external payable returns (uint256 used) {
        uint256 r0 = address(this).balance - msg.value;
        uint256 r1 = token.balanceOf(address(this));
        require(out < r1, "not enough liquidity");
        used = (r0 * out * 1000) / ((r1 - out) * 997) + 1;
        require(used <= msg.value, "too little ETH sent");
        require(token.transfer(to, out), "transfer failed");
        if (msg.value > used) {
            (bool ok, ) = payable(msg.sender).call{value: msg.value - used}("");
            require(ok, "refund failed");
        }
        _swapped(used, 0, 0, out, to);
    }

    /// Sells `amountIn` tokens (approved to the pool) for ETH, paid to `to`.
    function swapExactTokensForETH(uint256 amountIn, address payable to) external returns (uint256 out) {
        uint256 r0 = address(this).balance;
        uint256 r1 = token.balanceOf(address(this));
        require(token.transferFrom(msg.sender, address(this), amountIn), "pull failed");
        uint256 inFee = amountIn * 997;
        out = (inFee * r0) / (r1 * 1000 + inFee);
        require(out > 0, "too little out");
        (bool ok, ) = to.call{value: out}("");
        require(ok, "payment failed");
        _swapped(0, amountIn, out, 0, to);
    }

    receive() external payable {}
}
