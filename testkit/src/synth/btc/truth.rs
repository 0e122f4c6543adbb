//! Ground-truth CSV files written next to the blocks directory.
//!
//! - `labels.csv` (`address,label,category`): what an investigator would know.
//!   Every scam deposit address that received a payment (`scam`, label
//!   `scam-op-N`), every exchange hot wallet address, a quarter of the exchange
//!   deposit addresses and every deposit address that received a scam cash-out
//!   (`exchange`, label `exchange-N`), and CoinJoin coordinator fee addresses
//!   (`mixer`, label `mixer-N`).
//! - `entities.csv` (`address,entity_id`): the real owner of every address that
//!   appears in a best-chain output (one row each; bare p2pk and bare multisig
//!   outputs have no address and no row). Entity ids are `miner-N`, `exchange-N`,
//!   `scam-op-N`, `mixer-N`, `user-N`, 1-based.
//! - `cashouts.csv` (`op,seed_address,exit_address,amount,hops,txid`): one row per
//!   output of a scam cash-out transaction paying an exchange deposit address.
//!   `seed_address` is the scam deposit address paid by the earliest victim payment
//!   upstream of the cash-out; `hops` counts from victim payments (hop 0) with the
//!   minimum taken over merged inputs; `amount` is in sats.
//! - `coinjoins.csv` (`txid,protocol,participants`): every CoinJoin the generator made
//!   (`whirlpool`, `wasabi1`, `wasabi2`, `joinmarket`, `generic`: a coordinator of its
//!   own kind) and every Whirlpool tx0 (`whirlpool_tx0`: one user's premix transaction,
//!   not a mix), in chain order.
//!
//! - `typologies.csv` (`pattern,address,first_height,last_height,txids`): the planted
//!   typologies, `txids` space-separated in chain order. `peel_chain`: every peel chain
//!   users make (address: the output the chain began by spending; short ones too);
//!   `victim_collection`: every scam deposit address victims paid (txids: the
//!   payments); with `SynthConfig::typologies`, `pass_through` (a scam relay's hops
//!   after the first, address: the first address of those hops) and `fan_out` (a
//!   structuring transaction, address: the address it spends from).
//!
//! Rows of `labels.csv` and `entities.csv` are in order of address creation;
//! `cashouts.csv` is in chain order. Only best-chain transactions count.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::economy::{Cashout, CoinJoinTruth, Economy, Plant};
use super::error::{Error, Result};

pub(crate) struct Truth {
    dir: PathBuf,
    cashouts_path: PathBuf,
    cashouts: BufWriter<File>,
    coinjoins_path: PathBuf,
    coinjoins: BufWriter<File>,
    plants_path: PathBuf,
    plants: BufWriter<File>,
    rows: u64,
}

fn create(path: &Path, header: &str) -> Result<BufWriter<File>> {
    let file = File::create(path).map_err(|source| Error::io(path, source))?;
    let mut out = BufWriter::new(file);
    writeln!(out, "{header}").map_err(|source| Error::io(path, source))?;
    Ok(out)
}

impl Truth {
    pub(crate) fn create(dir: &Path) -> Result<Self> {
        let cashouts_path = dir.join("cashouts.csv");
        let cashouts = create(
            &cashouts_path,
            "op,seed_address,exit_address,amount,hops,txid",
        )?;
        let coinjoins_path = dir.join("coinjoins.csv");
        let coinjoins = create(&coinjoins_path, "txid,protocol,participants")?;
        let plants_path = dir.join("typologies.csv");
        let plants = create(
            &plants_path,
            "pattern,address,first_height,last_height,txids",
        )?;
        Ok(Truth {
            plants_path,
            plants,
            dir: dir.to_path_buf(),
            cashouts_path,
            cashouts,
            coinjoins_path,
            coinjoins,
            rows: 0,
        })
    }

    pub(crate) fn coinjoins(&mut self, rows: &[CoinJoinTruth]) -> Result<()> {
        for c in rows {
            writeln!(
                self.coinjoins,
                "{},{},{}",
                c.txid, c.protocol, c.participants
            )
            .map_err(|source| Error::io(&self.coinjoins_path, source))?;
        }
        Ok(())
    }

    pub(crate) fn plants(&mut self, econ: &Economy, rows: &[Plant]) -> Result<()> {
        for p in rows {
            let txids: Vec<String> = p.txids.iter().map(ToString::to_string).collect();
            writeln!(
                self.plants,
                "{},{},{},{},{}",
                p.pattern,
                econ.address(p.addr),
                p.first_height,
                p.last_height,
                txids.join(" ")
            )
            .map_err(|source| Error::io(&self.plants_path, source))?;
        }
        Ok(())
    }

    pub(crate) fn cashouts(&mut self, econ: &Economy, rows: &[Cashout]) -> Result<()> {
        for c in rows {
            writeln!(
                self.cashouts,
                "{},{},{},{},{},{}",
                econ.scam_name(c.op),
                econ.address(c.seed_addr),
                econ.address(c.exit_addr),
                c.amount,
                c.hops,
                c.txid
            )
            .map_err(|source| Error::io(&self.cashouts_path, source))?;
            self.rows += 1;
        }
        Ok(())
    }

    /// Writes `entities.csv` and `labels.csv` and closes `cashouts.csv`; returns the
    /// number of cash-out rows.
    pub(crate) fn finish(mut self, econ: &Economy) -> Result<u64> {
        self.cashouts
            .flush()
            .map_err(|source| Error::io(&self.cashouts_path, source))?;
        self.coinjoins
            .flush()
            .map_err(|source| Error::io(&self.coinjoins_path, source))?;
        self.plants
            .flush()
            .map_err(|source| Error::io(&self.plants_path, source))?;

        let path = self.dir.join("entities.csv");
        let mut out = create(&path, "address,entity_id")?;
        econ.for_each_entity(|address, entity| writeln!(out, "{address},{entity}"))
            .and_then(|_| out.flush())
            .map_err(|source| Error::io(&path, source))?;

        let path = self.dir.join("labels.csv");
        let mut out = create(&path, "address,label,category")?;
        econ.for_each_label(|address, label, category| {
            writeln!(out, "{address},{label},{category}")
        })
        .and_then(|_| out.flush())
        .map_err(|source| Error::io(&path, source))?;
        Ok(self.rows)
    }
}
