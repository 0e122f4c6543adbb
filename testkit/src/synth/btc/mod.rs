//! A deterministic synthetic Bitcoin chain: a Bitcoin Core blocks directory plus
//! ground-truth CSV files.
//!
//! [`generate`] writes `out_dir/blocks/` exactly as Bitcoin Core lays it out
//! (`blkNNNNN.dat` records, preallocation padding, optional `xor.dat`
//! obfuscation, stale forks, blocks stored before their parents) and
//! `out_dir/truth/` (`labels.csv`, `entities.csv`, `cashouts.csv`, described in
//! the `truth` module). The same [`SynthConfig`] always gives byte-identical output.
//!
//! The chain:
//! - height 0 is `bitcoin::constants::genesis_block(network)`, stored first;
//! - heights 1..=`blocks` form the best chain; each block has a BIP34 coinbase
//!   paying subsidy + fees to a mining pool, a correct merkle root, a BIP141
//!   witness commitment when it holds segwit spends, nBits `0x207fffff` (regtest's
//!   minimum difficulty, whatever the network) with a ground nonce, and a time about
//!   600 s after its parent's (block 1: genesis time + 600);
//! - every 15–35 blocks a competing sibling (another pool's coinbase plus a prefix
//!   of the best block's transactions, so it needs nothing the best chain lacks) is
//!   stored too; one fork in four is a two-block branch whose second block holds only
//!   a coinbase. Forks stop three blocks short of the tip, so the best chain always
//!   has strictly more work. The stale block is stored either just before its best
//!   sibling (it arrived first and was reorganised away) or after it;
//! - every 30–50 blocks a block's record is written after its child's, as Core does
//!   when blocks arrive out of order.
//!
//! The transactions come from the `economy` module (users, pools, exchanges,
//! CoinJoins, peel chains, scam operations). Scripts have realistic shapes but no
//! valid signatures.
//!
//! ```no_run
//! use ferret_testkit::synth::btc::{generate, SynthConfig};
//! let cfg = SynthConfig { blocks: 120, txs_per_block: 20, ..SynthConfig::default() };
//! let summary = generate(&cfg, std::path::Path::new("/tmp/synth")).expect("generated");
//! println!("{} blocks, {} transactions", summary.blocks, summary.transactions);
//! ```

mod blk;
mod economy;
mod error;
mod script;
mod truth;

use std::path::Path;
use std::time::Instant;

use bitcoin::block::{Header, Version as BlockVersion};
use bitcoin::consensus::Encodable as _;
use bitcoin::consensus::encode::serialize;
use bitcoin::hashes::Hash as _;
use bitcoin::opcodes::all::OP_RETURN;
use bitcoin::script::Builder;
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, Block, BlockHash, CompactTarget, Network, OutPoint, ScriptBuf, Sequence, Target,
    Transaction, TxIn, TxMerkleNode, TxOut, Txid, VarInt, Witness, WitnessMerkleNode, Wtxid,
};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use error::{Error, Result};

use blk::BlkWriter;
use economy::{BlockBody, Economy};
use truth::Truth;

/// nBits of every generated block: regtest's proof-of-work limit.
pub const SYNTH_BITS: u32 = 0x207f_ffff;
/// Bitcoin Core's `MAX_BLOCKFILE_SIZE`.
pub const DEFAULT_MAX_BLOCKFILE_SIZE: u64 = 0x800_0000;
/// Upper bound on `blocks × txs_per_block`, which keeps address ids within `u32`.
pub const MAX_TRANSACTIONS: u64 = 50_000_000;

/// What to generate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynthConfig {
    /// Blocks mined on top of genesis; the best chain has `blocks + 1` blocks.
    pub blocks: u32,
    /// Seed of every random choice.
    pub seed: u64,
    /// Target number of non-coinbase transactions per block (±10%; early blocks
    /// have fewer while the economy is being funded).
    pub txs_per_block: u32,
    /// Obfuscate the blk files with a random key in `xor.dat` (Core >= 28).
    pub xor: bool,
    /// Network whose magic and genesis block are used.
    pub network: Network,
    /// Size at which a blk file is full (Core: 128 MiB).
    pub max_blockfile_size: u64,
    /// Plant scam typologies (relays, structuring, pig-butchering victims who pay
    /// again and more) and their look-alikes (merchants, salary runs); see
    /// `truth/typologies.csv`. Off, the economy is as before.
    pub typologies: bool,
}

impl Default for SynthConfig {
    fn default() -> Self {
        SynthConfig {
            blocks: 200,
            seed: 1,
            txs_per_block: 50,
            xor: false,
            network: Network::Regtest,
            max_blockfile_size: DEFAULT_MAX_BLOCKFILE_SIZE,
            typologies: false,
        }
    }
}

/// What was generated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SynthSummary {
    /// Best-chain blocks, genesis included.
    pub blocks: u64,
    /// Blocks stored that are not on the best chain.
    pub stale_blocks: u64,
    /// Transactions in best-chain blocks, coinbases (genesis included) counted.
    pub transactions: u64,
    /// Number of `blkNNNNN.dat` files.
    pub blk_files: u32,
    /// Total size of the blk files, padding included.
    pub blk_bytes: u64,
    /// Rows of `truth/cashouts.csv`.
    pub scam_flows: u64,
    /// Hash of the best chain's tip.
    pub best_tip: BlockHash,
}

/// Block subsidy at `height`: 50 BTC halving every 150 blocks on regtest and every
/// 210,000 blocks elsewhere.
pub fn subsidy(height: u32, network: Network) -> u64 {
    let interval = if network == Network::Regtest {
        150
    } else {
        210_000
    };
    let halvings = height / interval;
    if halvings >= 64 {
        0
    } else {
        (50 * 100_000_000u64) >> halvings
    }
}

/// How often progress is logged.
const LOG_EVERY: u32 = 1000;

/// Generates the chain described by `cfg` into `out_dir/blocks` and `out_dir/truth`.
///
/// `out_dir/blocks` must not exist or be empty, so that no file of an earlier run
/// survives next to the new ones.
pub fn generate(cfg: &SynthConfig, out_dir: &Path) -> Result<SynthSummary> {
    validate(cfg)?;
    let started = Instant::now();
    let blocks_dir = out_dir.join("blocks");
    let truth_dir = out_dir.join("truth");
    for dir in [&blocks_dir, &truth_dir] {
        std::fs::create_dir_all(dir).map_err(|source| Error::io(dir, source))?;
    }
    let mut entries =
        std::fs::read_dir(&blocks_dir).map_err(|source| Error::io(&blocks_dir, source))?;
    if entries.next().is_some() {
        return Err(Error::OutputNotEmpty { path: blocks_dir });
    }

    let key = if cfg.xor {
        let key = xor_key(cfg.seed);
        let path = blocks_dir.join("xor.dat");
        std::fs::write(&path, key).map_err(|source| Error::io(&path, source))?;
        Some(key)
    } else {
        None
    };
    let mut writer = BlkWriter::new(
        &blocks_dir,
        cfg.network.magic().to_bytes(),
        cfg.max_blockfile_size,
        key,
    );
    let mut truth = Truth::create(&truth_dir)?;
    let expected = u64::from(cfg.blocks) * u64::from(cfg.txs_per_block);
    let mut econ = Economy::new(cfg.seed, cfg.network, expected, cfg.typologies);
    let mut chain = ChaCha8Rng::seed_from_u64(cfg.seed);
    chain.set_stream(2);

    let genesis = bitcoin::constants::genesis_block(cfg.network);
    writer.write_record(&serialize(&genesis), 0)?;
    let mut summary = SynthSummary {
        blocks: 1,
        stale_blocks: 0,
        transactions: genesis.txdata.len() as u64,
        blk_files: 0,
        blk_bytes: 0,
        scam_flows: 0,
        best_tip: genesis.block_hash(),
    };

    let mut prev = genesis.block_hash();
    let mut time = genesis.header.time;
    let mut next_stale = chain.random_range(15..=35u32);
    let mut next_swap = chain.random_range(30..=50u32);
    // A best-chain record held back to be written after its child.
    let mut held: Option<Vec<u8>> = None;
    // Stale records to write once the best block at the given height is stored.
    let mut deferred: Vec<(u32, Vec<u8>)> = Vec::new();

    for height in 1..=cfg.blocks {
        let step = if height == 1 {
            600
        } else {
            chain.random_range(400..=800u32)
        };
        time = time
            .checked_add(step)
            .ok_or(Error::TimeOverflow { height })?;
        let spread = (cfg.txs_per_block / 10).max(1);
        let slots = if cfg.txs_per_block == 0 {
            0
        } else {
            chain
                .random_range(cfg.txs_per_block.saturating_sub(spread)..=cfg.txs_per_block + spread)
        };
        let body = econ.build_block(slots);
        let pool = econ.pick_pool();
        let fees: u64 = body.fees.iter().sum();
        let value = subsidy(height, cfg.network) + fees;
        let block = assemble(
            &mut chain,
            BlockSpec {
                height,
                prev,
                time,
                value,
                payout: econ.pool_script(pool),
                tag: pool,
                body: &body,
                n_txs: body.txs.len(),
            },
        );
        let hash = block.hash();
        econ.credit_coinbase(
            pool,
            block.coinbase_txid,
            value,
            subsidy(height, cfg.network),
        );
        let cashouts = econ.take_cashouts();
        truth.cashouts(&econ, &cashouts)?;
        truth.coinjoins(&econ.take_coinjoins())?;
        let plants = econ.take_plants();
        truth.plants(&econ, &plants)?;
        summary.transactions += body.txs.len() as u64 + 1;
        summary.blocks += 1;
        let bytes = block.encode(&body.txs);

        // A competing sibling, and sometimes a second block on top of it.
        let mut stale: Vec<(u32, Vec<u8>)> = Vec::new();
        if height == next_stale {
            next_stale = height + chain.random_range(15..=35u32);
            if height + 3 <= cfg.blocks {
                let rival = econ.rival_pool(pool);
                let n = chain.random_range(0..=body.txs.len() / 2);
                let fees: u64 = body.fees[..n].iter().sum();
                let stale_time = time - 60 + chain.random_range(0..=120u32);
                let first = assemble(
                    &mut chain,
                    BlockSpec {
                        height,
                        prev,
                        time: stale_time,
                        value: subsidy(height, cfg.network) + fees,
                        payout: econ.pool_script(rival),
                        tag: rival,
                        body: &body,
                        n_txs: n,
                    },
                );
                let first_hash = first.hash();
                stale.push((height, first.encode(&body.txs[..n])));
                if chain.random_ratio(1, 4) {
                    let second_time = stale_time + chain.random_range(400..=800u32);
                    let second = assemble(
                        &mut chain,
                        BlockSpec {
                            height: height + 1,
                            prev: first_hash,
                            time: second_time,
                            value: subsidy(height + 1, cfg.network),
                            payout: econ.pool_script(rival),
                            tag: rival,
                            body: &BlockBody::default(),
                            n_txs: 0,
                        },
                    );
                    stale.push((height + 1, second.encode(&[])));
                }
            }
        }
        summary.stale_blocks += stale.len() as u64;
        let stale_first = !stale.is_empty() && chain.random_ratio(1, 2);
        if stale_first {
            for (_, record) in stale.drain(..) {
                writer.write_record(&record, height)?;
            }
        }
        deferred.extend(stale);

        let swap = height == next_swap;
        if swap {
            next_swap = height + chain.random_range(30..=50u32);
        }
        if swap && height < cfg.blocks && held.is_none() {
            held = Some(bytes);
        } else {
            writer.write_record(&bytes, height)?;
            if let Some(parent) = held.take() {
                writer.write_record(&parent, height - 1)?;
            }
            let (due, later): (Vec<_>, Vec<_>) =
                deferred.drain(..).partition(|(after, _)| *after <= height);
            for (after, record) in due {
                writer.write_record(&record, after)?;
            }
            deferred = later;
        }

        prev = hash;
        summary.best_tip = hash;
        if height % LOG_EVERY == 0 {
            let h = econ.holdings();
            tracing::info!(
                height,
                transactions = summary.transactions,
                stale = summary.stale_blocks,
                addresses = econ.address_count(),
                utxos = h.utxos,
                users_btc = h.users / 100_000_000,
                exchanges_btc = h.exchanges / 100_000_000,
                pools_btc = h.pools / 100_000_000,
                scams_btc = h.scams / 100_000_000,
                made = %econ.made(),
                elapsed_s = started.elapsed().as_secs_f64(),
                "synth progress"
            );
        }
    }
    if let Some(parent) = held.take() {
        writer.write_record(&parent, cfg.blocks)?;
    }
    for (after, record) in deferred {
        writer.write_record(&record, after)?;
    }

    let open = econ.final_plants();
    truth.plants(&econ, &open)?;
    let (files, bytes) = writer.finish()?;
    summary.blk_files = files;
    summary.blk_bytes = bytes;
    summary.scam_flows = truth.finish(&econ)?;
    tracing::info!(
        blocks = summary.blocks,
        stale = summary.stale_blocks,
        transactions = summary.transactions,
        blk_files = summary.blk_files,
        scam_flows = summary.scam_flows,
        elapsed_s = started.elapsed().as_secs_f64(),
        "synthetic chain written"
    );
    Ok(summary)
}

fn validate(cfg: &SynthConfig) -> Result<()> {
    if u64::from(cfg.blocks) * u64::from(cfg.txs_per_block) > MAX_TRANSACTIONS {
        return Err(Error::InvalidConfig {
            field: "blocks",
            reason: "times txs_per_block must be at most 50,000,000",
        });
    }
    if cfg.max_blockfile_size < 1024 {
        return Err(Error::InvalidConfig {
            field: "max_blockfile_size",
            reason: "must be at least 1024 bytes",
        });
    }
    Ok(())
}

/// The obfuscation key: 8 non-zero bytes from its own RNG stream, so that the
/// blocks themselves do not depend on `xor`.
fn xor_key(seed: u64) -> [u8; 8] {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(1);
    let mut key = [0u8; 8];
    for b in &mut key {
        while *b == 0 {
            *b = rng.random();
        }
    }
    key
}

struct BlockSpec<'a> {
    height: u32,
    prev: BlockHash,
    time: u32,
    /// Coinbase output value: subsidy plus the fees of the included transactions.
    value: u64,
    payout: ScriptBuf,
    /// Pool index, written into the coinbase tag.
    tag: u32,
    body: &'a BlockBody,
    /// How many of `body`'s transactions (a prefix) to include.
    n_txs: usize,
}

/// A mined block: its header and coinbase; the other transactions are a prefix of
/// a [`BlockBody`].
struct Mined {
    header: Header,
    coinbase: Transaction,
    coinbase_txid: Txid,
}

impl Mined {
    fn hash(&self) -> BlockHash {
        self.header.block_hash()
    }

    /// The consensus encoding of the block with `txs` after the coinbase, written
    /// without first collecting the transactions into a [`Block`].
    fn encode(&self, txs: &[Transaction]) -> Vec<u8> {
        let mut buf = Vec::with_capacity(1024);
        let n = VarInt::from(txs.len() + 1);
        self.header
            .consensus_encode(&mut buf)
            .expect("writing to a Vec cannot fail");
        n.consensus_encode(&mut buf)
            .expect("writing to a Vec cannot fail");
        self.coinbase
            .consensus_encode(&mut buf)
            .expect("writing to a Vec cannot fail");
        for tx in txs {
            tx.consensus_encode(&mut buf)
                .expect("writing to a Vec cannot fail");
        }
        buf
    }
}

/// Builds the coinbase and header of a block holding a prefix of `spec.body`, and
/// grinds its nonce.
fn assemble(rng: &mut ChaCha8Rng, spec: BlockSpec<'_>) -> Mined {
    let txs = &spec.body.txs[..spec.n_txs];
    let segwit = txs
        .iter()
        .any(|tx| tx.input.iter().any(|i| !i.witness.is_empty()));
    let commitment = segwit.then(|| {
        let wtxids = std::iter::once(Wtxid::all_zeros())
            .chain(spec.body.wtxids[..spec.n_txs].iter().copied())
            .map(|w| w.to_raw_hash());
        let root = bitcoin::merkle_tree::calculate_root(wtxids)
            .map(WitnessMerkleNode::from_raw_hash)
            .expect("the iterator holds at least the coinbase");
        Block::compute_witness_commitment(&root, &[0u8; 32])
    });

    let mut extranonce = [0u8; 8];
    rng.fill_bytes(&mut extranonce);
    let tag = format!("/ferret-pool-{}/", spec.tag + 1);
    let tag = <&bitcoin::script::PushBytes>::try_from(tag.as_bytes())
        .expect("a short tag is a valid push");
    // BIP34: the height as a minimal script number first (OP_1..OP_16 below 17,
    // as Core's `CScript() << nHeight` writes it).
    let script_sig = Builder::new()
        .push_int(i64::from(spec.height))
        .push_slice(extranonce)
        .push_slice(tag)
        .into_script();
    let mut output = vec![TxOut {
        value: Amount::from_sat(spec.value),
        script_pubkey: spec.payout,
    }];
    let mut witness = Witness::new();
    if let Some(commitment) = commitment {
        let mut data = [0u8; 36];
        data[..4].copy_from_slice(&[0xaa, 0x21, 0xa9, 0xed]);
        data[4..].copy_from_slice(commitment.as_byte_array());
        let script_pubkey = Builder::new()
            .push_opcode(OP_RETURN)
            .push_slice(data)
            .into_script();
        output.push(TxOut {
            value: Amount::ZERO,
            script_pubkey,
        });
        witness.push([0u8; 32]);
    }
    let coinbase = Transaction {
        version: Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig,
            sequence: Sequence::MAX,
            witness,
        }],
        output,
    };
    let coinbase_txid = coinbase.compute_txid();
    let txids = std::iter::once(coinbase_txid)
        .chain(spec.body.txids[..spec.n_txs].iter().copied())
        .map(Txid::to_raw_hash);
    let merkle_root = bitcoin::merkle_tree::calculate_root(txids)
        .map(TxMerkleNode::from_raw_hash)
        .expect("the iterator holds at least the coinbase");

    let bits = CompactTarget::from_consensus(SYNTH_BITS);
    let target = Target::from_compact(bits);
    let mut header = Header {
        version: BlockVersion::from_consensus(0x2000_0000),
        prev_blockhash: spec.prev,
        merkle_root,
        time: spec.time,
        bits,
        nonce: rng.random(),
    };
    // Half of all hashes meet regtest's target; 2^32 misses in a row do not happen.
    while !target.is_met_by(header.block_hash()) {
        header.nonce = header.nonce.wrapping_add(1);
    }
    Mined {
        header,
        coinbase,
        coinbase_txid,
    }
}
