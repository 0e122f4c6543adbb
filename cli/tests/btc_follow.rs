//! `ferret index btc --follow` against a blocks dir that grows the way Bitcoin Core's does:
//! an obfuscated (xor.dat) file preallocated in steps with raw zeros, records written into
//! that space (the 8-byte record header first, the block a moment later), a new file when
//! the current one is full, torn writes (a block header whole, its transactions not yet),
//! and a reorganisation that replaces the two blocks the follower has already committed. The follower must unwind them, index the new branch, stop
//! cleanly on SIGTERM, and leave exactly what a fresh index of the final dir holds.

mod common;

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use ferret_indexer::source::bitcoin::{BlkDir, ScanCache};
use ferret_schemas::{Chain, Warehouse};

const KEY: [u8; 8] = [0x1b, 0x52, 0xdf, 0x16, 0x9a, 0x03, 0x77, 0xe4];

/// Writes blk files as Core does: preallocated with raw zeros in `step`-byte steps, the
/// bytes XORed with the key by their position in the file, a new file past `max_file`.
struct Node {
    dir: PathBuf,
    file: usize,
    pos: u64,
    max_file: u64,
    step: u64,
}

impl Node {
    fn new(dir: &Path, max_file: u64, step: u64) -> Self {
        std::fs::create_dir_all(dir).expect("mkdir");
        std::fs::write(dir.join("xor.dat"), KEY).expect("xor.dat");
        Self {
            dir: dir.to_path_buf(),
            file: 0,
            pos: 0,
            max_file,
            step,
        }
    }

    fn path(&self) -> PathBuf {
        self.dir.join(format!("blk{:05}.dat", self.file))
    }

    fn write_at(&self, offset: u64, bytes: &[u8]) {
        let mut f = OpenOptions::new()
            .write(true)
            .open(self.path())
            .expect("open blk");
        let x: Vec<u8> = bytes
            .iter()
            .enumerate()
            .map(|(i, b)| b ^ KEY[((offset + i as u64) % 8) as usize])
            .collect();
        f.seek(SeekFrom::Start(offset)).expect("seek");
        f.write_all(&x).expect("write");
        f.sync_data().expect("sync");
    }

    /// Appends one record (magic, length, block); with `pause`, the block is written that
    /// long after its record header.
    fn append(&mut self, rec: &[u8], pause: Option<Duration>) {
        self.append_split(rec, 8, pause);
    }

    /// Appends one record written in two parts, `pause` apart: the first `split` bytes,
    /// then the rest (past 88, the block header is whole and the block is not: a torn
    /// write a reader can catch).
    fn append_split(&mut self, rec: &[u8], split: usize, pause: Option<Duration>) {
        let len = rec.len() as u64;
        if self.pos > 0 && self.pos + len > self.max_file {
            // Core truncates a finished file to its data and moves to the next.
            let f = OpenOptions::new()
                .write(true)
                .open(self.path())
                .expect("open");
            f.set_len(self.pos).expect("truncate");
            self.file += 1;
            self.pos = 0;
        }
        let f = OpenOptions::new()
            .create(true)
            .append(false)
            .write(true)
            .truncate(false)
            .open(self.path())
            .expect("open blk");
        let have = f.metadata().expect("meta").len();
        if self.pos + len > have {
            f.set_len((self.pos + len).div_ceil(self.step) * self.step)
                .expect("preallocate");
        }
        drop(f);
        self.write_at(self.pos, &rec[..split]);
        if let Some(p) = pause {
            std::thread::sleep(p);
        }
        self.write_at(self.pos + split as u64, &rec[split..]);
        self.pos += len;
    }
}

fn tip_of(wh: &Path) -> Option<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let wh = Warehouse::open_existing(wh.to_str().expect("utf8")).ok()?;
        wh.load_manifest(Chain::Btc)
            .await
            .ok()
            .flatten()
            .and_then(|m| m.tip)
            .map(|t| t.hash)
    })
}

fn wait_for_tip(wh: &Path, want: &str, child: &mut std::process::Child) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while tip_of(wh).as_deref() != Some(want) {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            panic!("the follower exited ({status}) before reaching {want}: {err}");
        }
        assert!(
            Instant::now() < deadline,
            "the follower never reached tip {want} (at {:?})",
            tip_of(wh)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn follows_a_growing_obfuscated_dir_through_a_reorg_and_stops_on_sigterm() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fork = Fork::find(tmp.path());
    let blocks = tmp.path().join("node/blocks");
    let wh_dir = tmp.path().join("wh");
    // Files of ~120 KB preallocated in 64 KiB steps: the chain spans several files, and
    // the newest always ends in raw zeros.
    let mut node = Node::new(&blocks, 120_000, 64 << 10);
    for rec in &fork.early {
        node.append(rec, None);
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferret"))
        .args([
            "index",
            "btc",
            "--follow",
            "--poll-secs",
            "0.25",
            "--commit-blocks",
            "7",
            "--blocks-dir",
            blocks.to_str().expect("utf8"),
            "--warehouse",
            wh_dir.to_str().expect("utf8"),
        ])
        .env("FERRET_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the follower");
    wait_for_tip(&wh_dir, &fork.s2.to_string(), &mut child);

    // The node goes on: the rest of the chain, whose heavier branch replaces s1 → s2, in
    // bursts, each record's block written a moment after its header.
    let rest: Vec<&Vec<u8>> = fork
        .all
        .iter()
        .filter(|r| !fork.early.contains(r))
        .collect();
    let mut torn = 0;
    for (i, rec) in rest.iter().enumerate() {
        if i % 15 == 7 && rec.len() > 400 {
            // Torn: the block header whole, the transactions not yet. The follower must
            // take it for a block still being written, not for damage.
            node.append_split(rec, rec.len() / 2, Some(Duration::from_millis(400)));
            torn += 1;
            continue;
        }
        let pause = (i % 9 == 0).then_some(Duration::from_millis(300));
        node.append(rec, pause);
        if i % 20 == 19 {
            std::thread::sleep(Duration::from_millis(400));
        }
    }
    wait_for_tip(&wh_dir, &fork.tip.to_string(), &mut child);
    assert!(node.file >= 2, "the chain spans several blk files");

    let pid = child.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(killed.success());
    let out = child.wait_with_output().expect("follower output");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success(),
        "SIGTERM ends a follower cleanly: {stderr}"
    );
    // At least s1 and s2; other stale blocks appended later may have been the best chain
    // for a poll or two, and were unwound too.
    let unwound: u64 = stdout
        .split("unwound ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(unwound >= 2, "the reorganisation was unwound: {stdout}");
    // Polled every 0.25 s, the follower caught at least one torn write mid-way.
    assert!(torn > 3, "{torn} torn writes");
    assert!(
        stderr.contains("did not read back whole"),
        "a torn block was retried, not indexed or fatal: {stderr}"
    );

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let wh = Warehouse::open_existing(wh_dir.to_str().expect("utf8")).expect("open");
        assert_equals_fresh_index(&wh, &blocks).await;
        assert_only_committed_files(&wh_dir, Chain::Btc).await;
    });
}

/// The incremental scan a follower uses equals a full scan after every kind of growth:
/// records written into the preallocated tail, a record header without its block yet, a
/// new file, a finished file truncated to its data.
#[test]
fn an_incremental_scan_equals_a_full_scan_as_the_dir_grows() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let fork = Fork::find(tmp.path());
    let blocks = tmp.path().join("node/blocks");
    let mut node = Node::new(&blocks, 90_000, 32 << 10);
    let mut cache = ScanCache::default();
    let key = |l: &ferret_indexer::source::bitcoin::BlockLocation| (l.file, l.offset, l.hash);
    let mut checked = 0;
    for (i, rec) in fork.all.iter().enumerate() {
        if i % 5 == 4 {
            // A record header whose block is not written yet: both scans stop before it.
            node.write_at(node.pos, &rec[..8]);
        } else {
            node.append(rec, None);
        }
        if i % 3 != 0 && i % 5 != 4 {
            continue;
        }
        let dir = BlkDir::open(&blocks, None).expect("open");
        let full: Vec<_> = dir.scan().expect("full scan").iter().map(key).collect();
        let incremental: Vec<_> = dir
            .scan_with(&mut cache)
            .expect("incremental scan")
            .iter()
            .map(key)
            .collect();
        assert_eq!(incremental, full, "after record {i}");
        if i % 5 == 4 {
            node.append(rec, None);
        }
        checked += 1;
    }
    assert!(checked > 50 && node.file >= 2);
}
