//! The synthetic Bitcoin chain generator: determinism, Core's on-disk layout, and
//! the consistency of the economy with its ground-truth files.
//!
//! Everything is decoded here independently of the indexer: blk records are read
//! by hand, XOR undone with `xor.dat`, blocks parsed with rust-bitcoin.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail, ensure};
use bitcoin::consensus::deserialize;
use bitcoin::hashes::Hash as _;
use bitcoin::{Address, Block, BlockHash, Network, OutPoint, Transaction, TxOut, Txid};
use ferret_testkit::synth::btc::{SynthConfig, SynthSummary, generate, subsidy};

fn small(seed: u64) -> SynthConfig {
    SynthConfig {
        blocks: 120,
        seed,
        txs_per_block: 20,
        // Small enough to roll over to several files.
        max_blockfile_size: 256 * 1024,
        ..SynthConfig::default()
    }
}

/// A stored record: file number, offset of its magic, and the block.
struct Record {
    file: u32,
    block: Block,
}

struct Decoded {
    records: Vec<Record>,
    /// Per file: number of trailing zero bytes after the last record.
    padding: Vec<u64>,
}

fn blk_files(blocks_dir: &Path) -> Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(blocks_dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<std::io::Result<_>>()?;
    files.retain(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("blk") && n.ends_with(".dat"))
    });
    files.sort();
    Ok(files)
}

fn decode(blocks_dir: &Path, network: Network) -> Result<Decoded> {
    let key = match std::fs::read(blocks_dir.join("xor.dat")) {
        Ok(k) => {
            ensure!(k.len() == 8, "xor.dat is {} bytes", k.len());
            Some(k)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e.into()),
    };
    let magic = network.magic().to_bytes();
    let mut records = Vec::new();
    let mut padding = Vec::new();
    for (no, path) in blk_files(blocks_dir)?.iter().enumerate() {
        let name = format!("blk{no:05}.dat");
        ensure!(
            path.ends_with(&name),
            "expected {name}, found {}",
            path.display()
        );
        let mut buf = std::fs::read(path)?;
        if let Some(key) = &key {
            for (i, b) in buf.iter_mut().enumerate() {
                *b ^= key[i % 8];
            }
        }
        let mut off = 0usize;
        while off + 8 <= buf.len() && buf[off..off + 4] != [0, 0, 0, 0] {
            ensure!(buf[off..off + 4] == magic, "bad magic in {name} at {off}");
            let len = u32::from_le_bytes(buf[off + 4..off + 8].try_into()?) as usize;
            let block: Block = deserialize(&buf[off + 8..off + 8 + len])
                .with_context(|| format!("block in {name} at {off}"))?;
            records.push(Record {
                file: u32::try_from(no)?,
                block,
            });
            off += 8 + len;
        }
        ensure!(
            buf[off..].iter().all(|&b| b == 0),
            "{name}: non-zero bytes after the last record"
        );
        padding.push((buf.len() - off) as u64);
    }
    Ok(Decoded { records, padding })
}

/// The best chain from genesis to `tip`, following prev hashes back.
fn best_chain(records: &[Record], tip: BlockHash) -> Result<Vec<&Block>> {
    let by_hash: HashMap<BlockHash, &Block> = records
        .iter()
        .map(|r| (r.block.block_hash(), &r.block))
        .collect();
    let mut chain = Vec::new();
    let mut at = tip;
    loop {
        let block = by_hash
            .get(&at)
            .with_context(|| format!("block {at} is not stored"))?;
        chain.push(*block);
        if block.header.prev_blockhash == BlockHash::all_zeros() {
            break;
        }
        at = block.header.prev_blockhash;
    }
    chain.reverse();
    Ok(chain)
}

fn read_csv(path: &Path) -> Result<(String, Vec<Vec<String>>)> {
    let text = std::fs::read_to_string(path).with_context(|| path.display().to_string())?;
    let mut lines = text.lines();
    let header = lines.next().context("empty csv")?.to_string();
    let rows = lines
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    Ok((header, rows))
}

fn all_files(root: &Path) -> Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(
                    path.strip_prefix(root)?.to_path_buf(),
                    std::fs::read(&path)?,
                );
            }
        }
    }
    Ok(out)
}

fn run(cfg: &SynthConfig) -> Result<(tempfile::TempDir, SynthSummary)> {
    let dir = tempfile::tempdir()?;
    let summary = generate(cfg, dir.path())?;
    Ok((dir, summary))
}

#[test]
fn same_config_gives_identical_files() -> Result<()> {
    let cfg = SynthConfig {
        blocks: 60,
        txs_per_block: 15,
        xor: true,
        ..small(7)
    };
    let (a, sa) = run(&cfg)?;
    let (b, sb) = run(&cfg)?;
    assert_eq!(sa, sb);
    let (fa, fb) = (all_files(a.path())?, all_files(b.path())?);
    assert_eq!(fa.keys().collect::<Vec<_>>(), fb.keys().collect::<Vec<_>>());
    for (name, bytes) in &fa {
        assert!(
            bytes == &fb[name],
            "{} differs between two runs",
            name.display()
        );
    }
    assert!(fa.contains_key(Path::new("blocks/xor.dat")));
    for name in ["labels.csv", "entities.csv", "cashouts.csv"] {
        assert!(
            fa.contains_key(&Path::new("truth").join(name)),
            "truth/{name} missing"
        );
    }

    let (c, _) = run(&SynthConfig { seed: 8, ..cfg })?;
    let blk = Path::new("blocks/blk00000.dat");
    assert_ne!(
        fa[blk],
        all_files(c.path())?[blk],
        "another seed gives the same blocks"
    );
    Ok(())
}

#[test]
fn other_networks_use_their_magic_genesis_and_addresses() -> Result<()> {
    let cfg = SynthConfig {
        blocks: 20,
        txs_per_block: 5,
        network: Network::Bitcoin,
        ..small(5)
    };
    let (dir, summary) = run(&cfg)?;
    let decoded = decode(&dir.path().join("blocks"), Network::Bitcoin)?;
    assert_eq!(
        decoded.records[0].block,
        bitcoin::constants::genesis_block(Network::Bitcoin)
    );
    assert_eq!(best_chain(&decoded.records, summary.best_tip)?.len(), 21);
    let (_, rows) = read_csv(&dir.path().join("truth/entities.csv"))?;
    assert!(!rows.is_empty());
    for row in rows {
        let address: Address<_> = row[0].parse()?;
        ensure!(
            address.is_valid_for_network(Network::Bitcoin),
            "{} is not a mainnet address",
            row[0]
        );
    }
    Ok(())
}

#[test]
fn refuses_a_non_empty_blocks_directory() -> Result<()> {
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("blocks"))?;
    std::fs::write(dir.path().join("blocks/blk00000.dat"), b"old")?;
    let err = generate(&small(1), dir.path())
        .err()
        .context("expected an error")?;
    assert!(err.to_string().contains("not empty"), "{err}");
    Ok(())
}

#[test]
fn blocks_directory_is_laid_out_like_core() -> Result<()> {
    let cfg = small(3);
    let (dir, summary) = run(&cfg)?;
    let blocks_dir = dir.path().join("blocks");
    assert!(!blocks_dir.join("xor.dat").exists());
    let decoded = decode(&blocks_dir, cfg.network)?;
    let records = &decoded.records;

    // Files: several, each padded with zeros.
    assert!(
        summary.blk_files >= 2,
        "expected a roll-over, got {} file(s)",
        summary.blk_files
    );
    assert_eq!(decoded.padding.len(), summary.blk_files as usize);
    assert!(
        decoded.padding.iter().all(|&p| p > 0),
        "a file without padding: {:?}",
        decoded.padding
    );
    let on_disk: u64 = blk_files(&blocks_dir)?
        .iter()
        .map(|p| std::fs::metadata(p).map(|m| m.len()))
        .sum::<std::io::Result<u64>>()?;
    assert_eq!(on_disk, summary.blk_bytes);

    // Genesis first; every block well formed.
    let genesis = bitcoin::constants::genesis_block(cfg.network);
    assert_eq!(records[0].block, genesis);
    assert_eq!(records[0].file, 0);
    let mut commitments = 0;
    for r in records {
        let b = &r.block;
        assert!(
            b.check_merkle_root(),
            "bad merkle root in {}",
            b.block_hash()
        );
        assert!(
            b.check_witness_commitment(),
            "bad witness commitment in {}",
            b.block_hash()
        );
        if b.txdata[0].output.iter().any(|o| {
            o.script_pubkey
                .as_bytes()
                .starts_with(&[0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed])
        }) {
            commitments += 1;
        }
        if *b != genesis {
            assert_eq!(b.header.bits.to_consensus(), 0x207f_ffff);
            assert!(
                b.header.target().is_met_by(b.block_hash()),
                "nonce not ground"
            );
            assert!(b.txdata[0].is_coinbase());
            assert!(b.txdata[1..].iter().all(|t| !t.is_coinbase()));
        }
    }
    assert!(commitments > 0, "no block carries a witness commitment");

    // Best chain, stale blocks, out-of-order storage.
    let chain = best_chain(records, summary.best_tip)?;
    assert_eq!(chain.len() as u64, summary.blocks);
    assert_eq!(summary.blocks, u64::from(cfg.blocks) + 1);
    assert_eq!(*chain[0], genesis);
    let best: HashSet<BlockHash> = chain.iter().map(|b| b.block_hash()).collect();
    let stale = records
        .iter()
        .filter(|r| !best.contains(&r.block.block_hash()))
        .count();
    assert!(stale > 0, "no stale blocks");
    assert_eq!(stale as u64, summary.stale_blocks);
    assert_eq!(records.len() as u64, summary.blocks + summary.stale_blocks);
    // No branch reaches the tip's height.
    let heights: HashMap<BlockHash, usize> = {
        let by_hash: HashMap<BlockHash, &Block> = records
            .iter()
            .map(|r| (r.block.block_hash(), &r.block))
            .collect();
        let mut h = HashMap::new();
        for r in records {
            let mut n = 0;
            let mut at = r.block.header.prev_blockhash;
            while let Some(b) = by_hash.get(&at) {
                n += 1;
                at = b.header.prev_blockhash;
            }
            h.insert(r.block.block_hash(), n);
        }
        h
    };
    let tip_height = heights[&summary.best_tip];
    assert_eq!(tip_height, cfg.blocks as usize);
    for r in records {
        let hash = r.block.block_hash();
        if !best.contains(&hash) {
            assert!(
                heights[&hash] < tip_height,
                "stale block {hash} ties the tip"
            );
        }
    }
    let mut stored = HashSet::new();
    let mut before_parent = 0;
    for r in records {
        if r.block != genesis && !stored.contains(&r.block.header.prev_blockhash) {
            before_parent += 1;
        }
        stored.insert(r.block.block_hash());
    }
    assert!(before_parent > 0, "no block is stored before its parent");

    // Heights (BIP34) and times along the best chain.
    for (height, b) in chain.iter().enumerate().skip(1) {
        let script = b.txdata[0].input[0].script_sig.as_bytes();
        if height <= 16 {
            assert_eq!(script[0], 0x50 + height as u8, "BIP34 height at {height}");
        } else {
            assert_eq!(b.bip34_block_height()?, height as u64);
        }
        assert!(b.header.time > chain[height - 1].header.time);
    }
    assert_eq!(chain[1].header.time, genesis.header.time + 600);

    // The obfuscated variant holds the same blocks in the same files.
    let (xdir, xsummary) = run(&SynthConfig {
        xor: true,
        ..cfg.clone()
    })?;
    let xblocks = xdir.path().join("blocks");
    let key = std::fs::read(xblocks.join("xor.dat"))?;
    assert!(key.len() == 8 && key.iter().all(|&b| b != 0), "key {key:?}");
    let xdecoded = decode(&xblocks, cfg.network)?;
    assert_eq!(xsummary, summary);
    assert_eq!(xdecoded.records.len(), records.len());
    for (a, b) in records.iter().zip(&xdecoded.records) {
        assert_eq!(a.file, b.file);
        assert_eq!(a.block, b.block);
    }
    assert_eq!(xdecoded.padding, decoded.padding);
    assert_ne!(
        std::fs::read(xblocks.join("blk00000.dat"))?,
        std::fs::read(blocks_dir.join("blk00000.dat"))?
    );
    Ok(())
}

/// The CoinJoin rule of the brief: at least 3 outputs and a most common output
/// value (not 546 or 2730) appearing p >= 2 times, with p <= inputs.
fn looks_like_coinjoin(tx: &Transaction) -> bool {
    if tx.output.len() < 3 {
        return false;
    }
    let mut counts: HashMap<u64, usize> = HashMap::new();
    for o in &tx.output {
        *counts.entry(o.value.to_sat()).or_default() += 1;
    }
    let (value, p) = counts
        .into_iter()
        .max_by_key(|&(v, c)| (c, v))
        .unwrap_or_default();
    p >= 2 && p <= tx.input.len() && value != 546 && value != 2730
}

fn address_of(out: &TxOut, network: Network) -> Option<String> {
    Address::from_script(&out.script_pubkey, network)
        .ok()
        .map(|a| a.to_string())
}

#[test]
fn economy_is_consistent_with_the_truth_files() -> Result<()> {
    let cfg = small(11);
    let (dir, summary) = run(&cfg)?;
    let net = cfg.network;
    let decoded = decode(&dir.path().join("blocks"), net)?;
    let chain = best_chain(&decoded.records, summary.best_tip)?;
    let truth = dir.path().join("truth");

    let (header, rows) = read_csv(&truth.join("entities.csv"))?;
    assert_eq!(header, "address,entity_id");
    let mut entities: HashMap<String, String> = HashMap::new();
    for row in rows {
        ensure!(row.len() == 2, "bad entities row {row:?}");
        if entities.insert(row[0].clone(), row[1].clone()).is_some() {
            bail!("address {} listed twice in entities.csv", row[0]);
        }
    }
    let (header, rows) = read_csv(&truth.join("labels.csv"))?;
    assert_eq!(header, "address,label,category");
    let labels: HashMap<String, (String, String)> = rows
        .into_iter()
        .map(|r| (r[0].clone(), (r[1].clone(), r[2].clone())))
        .collect();
    for category in ["scam", "exchange", "mixer"] {
        assert!(
            labels.values().any(|(_, c)| c == category),
            "no {category} label"
        );
    }
    for (address, (label, _)) in &labels {
        assert_eq!(
            entities.get(address),
            Some(label),
            "label of {address} is not its owner"
        );
    }

    // Replay the best chain.
    let mut utxos: HashMap<OutPoint, TxOut> = HashMap::new();
    let mut txs: HashMap<Txid, Transaction> = HashMap::new();
    let mut output_addresses: HashSet<String> = HashSet::new();
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    let mut hop: HashMap<OutPoint, u32> = HashMap::new();
    let (mut coinjoins, mut multi_entity_coinjoins, mut tx_count) = (0, 0, 0u64);
    for (height, block) in chain.iter().enumerate() {
        let mut fees = 0u64;
        for (i, tx) in block.txdata.iter().enumerate() {
            tx_count += 1;
            let txid = tx.compute_txid();
            if i > 0 {
                assert_eq!(tx.version, bitcoin::transaction::Version::TWO);
                let mut input_value = 0u64;
                let mut owners = HashSet::new();
                let mut in_hop: Option<u32> = None;
                for input in &tx.input {
                    let prev = utxos.remove(&input.previous_output).with_context(|| {
                        format!("{txid} spends a missing or spent {}", input.previous_output)
                    })?;
                    input_value += prev.value.to_sat();
                    if let Some(a) = address_of(&prev, net) {
                        owners.insert(entities[&a].clone());
                    }
                    if let Some(&h) = hop.get(&input.previous_output) {
                        in_hop = Some(in_hop.map_or(h, |m: u32| m.min(h)));
                    }
                }
                let output_value: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
                ensure!(input_value > output_value, "{txid} pays no fee");
                fees += input_value - output_value;
                if looks_like_coinjoin(tx) {
                    coinjoins += 1;
                    multi_entity_coinjoins += usize::from(owners.len() > 1);
                } else {
                    ensure!(owners.len() <= 1, "{txid} spends inputs of {owners:?}");
                }
                for (vout, o) in tx.output.iter().enumerate() {
                    let scam_seed = address_of(o, net)
                        .and_then(|a| labels.get(&a))
                        .is_some_and(|(_, c)| c == "scam");
                    let h = if scam_seed {
                        Some(0)
                    } else {
                        in_hop.map(|h| h + 1)
                    };
                    if let Some(h) = h {
                        hop.insert(
                            OutPoint {
                                txid,
                                vout: vout as u32,
                            },
                            h,
                        );
                    }
                }
            }
            for (vout, o) in tx.output.iter().enumerate() {
                let s = &o.script_pubkey;
                let kind = if s.is_p2pkh() {
                    "p2pkh"
                } else if s.is_p2sh() {
                    "p2sh"
                } else if s.is_p2wpkh() {
                    "p2wpkh"
                } else if s.is_p2wsh() {
                    "p2wsh"
                } else if s.is_p2tr() {
                    "p2tr"
                } else if s.is_p2pk() {
                    "p2pk"
                } else if s.is_multisig() {
                    "multisig"
                } else if s.is_op_return() {
                    "op_return"
                } else {
                    "other"
                };
                *kinds.entry(kind).or_default() += 1;
                if !s.is_op_return() && height > 0 {
                    assert!(o.value.to_sat() >= 546, "dust output in {txid}");
                }
                if let Some(a) = address_of(o, net) {
                    ensure!(
                        entities.contains_key(&a),
                        "{a} (output of {txid}) has no entity"
                    );
                    output_addresses.insert(a);
                }
                if !s.is_op_return() && height > 0 {
                    utxos.insert(
                        OutPoint {
                            txid,
                            vout: vout as u32,
                        },
                        o.clone(),
                    );
                }
            }
            txs.insert(txid, tx.clone());
        }
        if height > 0 {
            let coinbase: u64 = block.txdata[0]
                .output
                .iter()
                .map(|o| o.value.to_sat())
                .sum();
            assert_eq!(
                coinbase,
                subsidy(height as u32, net) + fees,
                "coinbase value at {height}"
            );
        }
    }
    assert_eq!(tx_count, summary.transactions);
    assert!(tx_count > 120 * 12, "only {tx_count} transactions");
    let unused: Vec<_> = entities
        .keys()
        .filter(|a| !output_addresses.contains(*a))
        .collect();
    assert!(
        unused.is_empty(),
        "entities.csv lists addresses in no output: {unused:?}"
    );
    for kind in [
        "p2pkh",
        "p2sh",
        "p2wpkh",
        "p2wsh",
        "p2tr",
        "p2pk",
        "multisig",
        "op_return",
    ] {
        assert!(kinds.contains_key(kind), "no {kind} output; saw {kinds:?}");
    }
    assert!(
        !kinds.contains_key("other"),
        "unexpected scripts: {kinds:?}"
    );
    assert!(coinjoins > 0 && multi_entity_coinjoins > 0, "no CoinJoins");

    // Cash-outs.
    let (header, rows) = read_csv(&truth.join("cashouts.csv"))?;
    assert_eq!(header, "op,seed_address,exit_address,amount,hops,txid");
    assert!(!rows.is_empty(), "no cash-outs");
    assert_eq!(rows.len() as u64, summary.scam_flows);
    for row in &rows {
        let [op, seed, exit, amount, hops, txid] = &row[..] else {
            bail!("bad row {row:?}")
        };
        let txid: Txid = txid.parse()?;
        let tx = txs
            .get(&txid)
            .with_context(|| format!("cash-out {txid} not on the best chain"))?;
        let amount: u64 = amount.parse()?;
        let hops: u32 = hops.parse()?;
        assert!((2..=6).contains(&hops), "hops {hops}");
        let vout = tx
            .output
            .iter()
            .position(|o| address_of(o, net).as_ref() == Some(exit) && o.value.to_sat() == amount)
            .with_context(|| format!("{txid} pays no {amount} to {exit}"))?;
        assert_eq!(
            labels.get(exit).map(|l| l.1.as_str()),
            Some("exchange"),
            "exit {exit}"
        );
        assert!(entities[exit].starts_with("exchange-"));
        assert_eq!(
            labels.get(seed),
            Some(&(op.clone(), "scam".to_string())),
            "seed {seed}"
        );
        assert_eq!(
            hop.get(&OutPoint {
                txid,
                vout: vout as u32
            }),
            Some(&hops),
            "hops of {txid}"
        );
        // Fully tainted: every input comes from the scam operation.
        for input in &tx.input {
            let prev =
                &txs[&input.previous_output.txid].output[input.previous_output.vout as usize];
            if let Some(a) = address_of(prev, net) {
                assert_eq!(&entities[&a], op, "cash-out {txid} spends {a}");
            }
        }
    }
    Ok(())
}
