//! Chain ranking: for nodes linked into chains (or any forest: each node names the one
//! before it), the first node of each node's chain and the node's position on it. This
//! is the parallel form of walking chains link by link: peel chains and pass-through
//! chains are linked on the spend graph (`typology::walk`) and ranked here, on the GPU
//! (`chainrank.wgsl`) or the CPU (`cpu.rs`) with identical results.
//!
//! Pointer jumping takes `ceil(log2(longest chain)) + 1` rounds of `n` threads.
//! Memory: four arrays of 4 bytes a node on the device (two read, two written each
//! round); each is one storage binding, so a run holds up to the adapter's
//! `max_storage_buffer_binding_size / 4` nodes (536 M on an adapter with wgpu's
//! 2^31 − 4 byte cap; 33.5 M on lavapipe). Beyond that `--device gpu` fails with the
//! reason and `--device auto` runs the CPU twin.

pub mod cpu;

use wgpu::util::DeviceExt;

use crate::device::{
    Backend, Gpu, RunScopes, bind, changed_buffer, changed_flag, compile, dispatch_dims, read_back,
};
use crate::{Error, Result};

const SHADER: &str = include_str!("chainrank.wgsl");

/// No node before this one: it heads its chain.
pub const NONE: u32 = u32::MAX;

/// Each node's chain head and position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ranked {
    /// The first node of the node's chain (itself for a head).
    pub head: Vec<u32>,
    /// Links between the head and the node (0 for a head).
    pub rank: Vec<u32>,
}

/// Ranks the chains given by `pred` (`pred[i]`: the node before `i`, or [`NONE`]).
/// A node may be named by several (a tree ranks too: every node gets its root and
/// depth). A cycle, a self-link or a node outside `0..n` is an error naming it.
pub fn rank_chains(backend: &Backend, pred: &[u32]) -> Result<Ranked> {
    let n = u32::try_from(pred.len())
        .ok()
        .filter(|&n| n < NONE)
        .ok_or_else(|| {
            Error::TooLarge(format!(
                "{} chain nodes: at most 2^32 − 2 a run",
                pred.len()
            ))
        })?;
    if let Some(i) = pred
        .iter()
        .enumerate()
        .position(|(i, &p)| p != NONE && (p >= n || p as usize == i))
    {
        return Err(Error::BadGraph(format!(
            "chain node {i} links to {}: outside 0..{n} or itself",
            pred[i]
        )));
    }
    let ranked = match backend {
        Backend::Cpu => run_cpu(pred),
        Backend::Gpu(gpu) => crate::device::gpu_or_cpu(
            gpu,
            || Kernel::new(gpu, SHADER)?.run(gpu, pred),
            || run_cpu(pred),
        )?,
    };
    check(pred, &ranked)?;
    Ok(ranked)
}

/// Where pointer jumping starts: every node points at the node before it (a head at
/// itself) one link away.
fn start(pred: &[u32]) -> (Vec<u32>, Vec<u32>) {
    pred.iter()
        .enumerate()
        .map(|(i, &p)| if p == NONE { (i as u32, 0) } else { (p, 1) })
        .unzip()
}

/// Rounds enough for any chain of at most 2^32 nodes, and one to see nothing move.
const MAX_ROUNDS: u32 = 34;

fn run_cpu(pred: &[u32]) -> Ranked {
    let (mut anc, mut dist) = start(pred);
    let (mut anc2, mut dist2) = (vec![0u32; pred.len()], vec![0u32; pred.len()]);
    for _ in 0..MAX_ROUNDS {
        let moved = cpu::round(&anc, &dist, &mut anc2, &mut dist2);
        std::mem::swap(&mut anc, &mut anc2);
        std::mem::swap(&mut dist, &mut dist2);
        if !moved {
            break;
        }
    }
    Ranked {
        head: anc,
        rank: dist,
    }
}

/// Every node must end at a head: a node that does not sat on a cycle.
fn check(pred: &[u32], r: &Ranked) -> Result<()> {
    match r
        .head
        .iter()
        .position(|&h| pred.get(h as usize) != Some(&NONE))
    {
        Some(i) => Err(Error::BadGraph(format!(
            "chain node {i} reaches no head: its links form a cycle"
        ))),
        None => Ok(()),
    }
}

/// The compiled pipeline.
pub(crate) struct Kernel {
    layout: wgpu::BindGroupLayout,
    jump: wgpu::ComputePipeline,
}

impl Kernel {
    pub(crate) fn new(gpu: &Gpu, source: &str) -> Result<Self> {
        // Bindings in the WGSL's order: params, anc_in, dist_in, anc_out, dist_out, changed.
        let c = compile(
            gpu,
            "chainrank.wgsl",
            source,
            &[true, true, false, false, false],
            &["jump"],
        )?;
        let jump = c.pipelines.into_iter().next().ok_or_else(|| Error::Gpu {
            what: "pipeline",
            reason: "expected one entry point".into(),
        })?;
        Ok(Self {
            layout: c.layout,
            jump,
        })
    }

    pub(crate) fn run(&self, gpu: &Gpu, pred: &[u32]) -> Result<Ranked> {
        let n = pred.len() as u32;
        if n == 0 {
            return Ok(Ranked {
                head: Vec::new(),
                rank: Vec::new(),
            });
        }
        let max_binding = gpu.max_binding_bytes();
        if u64::from(n) * 4 > max_binding {
            return Err(Error::TooLarge(format!(
                "{n} chain nodes need {} bytes in one binding; the adapter allows {max_binding}",
                u64::from(n) * 4
            )));
        }
        let d = &gpu.device;
        let scopes = RunScopes::push(gpu);
        let (anc, dist) = start(pred);
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC;
        let init = |label, data: &[u32]| {
            d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(data),
                usage,
            })
        };
        let bufs = [
            init("anc0", &anc),
            init("dist0", &dist),
            init("anc1", &anc),
            init("dist1", &dist),
        ];
        drop((anc, dist));
        let changed = changed_buffer(gpu);
        let params = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("params"),
            contents: bytemuck::cast_slice(&[n, 0, 0, 0]),
            usage: wgpu::BufferUsages::UNIFORM,
        });
        // Round k reads pair k % 2 and writes the other.
        let binds = [
            bind(
                gpu,
                &self.layout,
                &[&params, &bufs[0], &bufs[1], &bufs[2], &bufs[3], &changed],
            ),
            bind(
                gpu,
                &self.layout,
                &[&params, &bufs[2], &bufs[3], &bufs[0], &bufs[1], &changed],
            ),
        ];
        let mut rounds = 0u32;
        let mut settled = false;
        while rounds < MAX_ROUNDS {
            gpu.queue
                .write_buffer(&changed, 0, bytemuck::cast_slice(&[0u32]));
            let mut enc = d.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(&self.jump);
                pass.set_bind_group(0, &binds[(rounds % 2) as usize], &[]);
                let (x, y) = dispatch_dims(n, gpu);
                pass.dispatch_workgroups(x, y, 1);
            }
            gpu.queue.submit([enc.finish()]);
            rounds += 1;
            if !changed_flag(gpu, &changed, "chainrank")? {
                settled = true;
                break;
            }
        }
        // The last round wrote pair `rounds % 2`.
        let out = (rounds % 2) as usize * 2;
        let head = read_back(gpu, &bufs[out], n as usize)?;
        let rank = read_back(gpu, &bufs[out + 1], n as usize)?;
        scopes.check()?;
        tracing::debug!(rounds, nodes = n, settled, "chainrank on gpu");
        Ok(Ranked { head, rank })
    }
}

#[cfg(test)]
mod tests {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::testing::gpu;

    /// Independent oracle: walk back link by link.
    fn oracle(pred: &[u32]) -> Ranked {
        let (mut head, mut rank) = (Vec::new(), Vec::new());
        for i in 0..pred.len() {
            let (mut at, mut k) = (i, 0u32);
            while pred[at] != NONE {
                at = pred[at] as usize;
                k += 1;
            }
            head.push(at as u32);
            rank.push(k);
        }
        Ranked { head, rank }
    }

    /// Chains of random lengths over shuffled node ids, and some trees.
    fn random_chains(seed: u64, n: usize, max_len: usize) -> Vec<u32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut ids: Vec<u32> = (0..n as u32).collect();
        ids.shuffle(&mut rng);
        let mut pred = vec![NONE; n];
        let mut at = 0;
        while at < n {
            let len = rng.random_range(1..=max_len).min(n - at);
            for k in 1..len {
                pred[ids[at + k] as usize] = ids[at + k - 1];
            }
            at += len;
        }
        pred
    }

    fn cases() -> Vec<(String, Vec<u32>)> {
        let wg = crate::device::WORKGROUP_SIZE as usize;
        let mut c = vec![
            ("empty".to_string(), vec![]),
            ("one head".into(), vec![NONE]),
            ("no links".into(), vec![NONE; wg + 1]),
            (
                "one chain in order".into(),
                (0..5000u32)
                    .map(|i| if i == 0 { NONE } else { i - 1 })
                    .collect(),
            ),
            (
                "one chain backwards".into(),
                (0..5000u32)
                    .map(|i| if i == 4999 { NONE } else { i + 1 })
                    .collect(),
            ),
            (
                "a star (a tree)".into(),
                (0..wg as u32 * 3)
                    .map(|i| if i == 7 { NONE } else { 7 })
                    .collect(),
            ),
        ];
        for (i, (n, len)) in [
            (wg - 1, 3usize),
            (wg + 1, 40),
            (10_000, 8),
            (100_000, 2000),
            (70_000, 70_000),
        ]
        .into_iter()
        .enumerate()
        {
            c.push((
                format!("random n={n} len≤{len}"),
                random_chains(i as u64 + 1, n, len),
            ));
        }
        c
    }

    #[test]
    fn cpu_matches_the_oracle() {
        for (name, pred) in cases() {
            assert_eq!(
                rank_chains(&Backend::Cpu, &pred).expect(&name),
                oracle(&pred),
                "{name}"
            );
        }
    }

    #[test]
    fn gpu_matches_the_oracle() {
        let Some(g) = gpu() else { return };
        let kernel = Kernel::new(&g, SHADER).expect("pipeline");
        for (name, pred) in cases() {
            let got = kernel
                .run(&g, &pred)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(got, oracle(&pred), "{name}");
            assert_eq!(
                rank_chains(&Backend::Gpu(g.clone()), &pred).expect(&name),
                got,
                "{name}"
            );
        }
    }

    #[test]
    fn a_broken_kernel_is_caught() {
        let Some(g) = gpu() else { return };
        // Jumping without adding the distance walked.
        let broken = SHADER.replace("dist_in[i] + dist_in[a]", "dist_in[i]");
        assert_ne!(broken, SHADER);
        let kernel = Kernel::new(&g, &broken).expect("pipeline");
        let pred = random_chains(9, 10_000, 50);
        assert_ne!(
            kernel.run(&g, &pred).expect("runs"),
            oracle(&pred),
            "the harness must see a broken kernel"
        );
    }

    #[test]
    fn cycles_and_bad_links_are_refused() {
        for backend in [Some(Backend::Cpu), gpu().map(Backend::Gpu)]
            .into_iter()
            .flatten()
        {
            // 0 → 1 → 2 → 0, and a 4-cycle (pointer jumping lands every node on itself).
            for pred in [vec![2, 0, 1, NONE], vec![3, 0, 1, 2, NONE]] {
                let e = rank_chains(&backend, &pred).expect_err("a cycle");
                assert!(e.to_string().contains("cycle"), "{e}");
            }
            let e = rank_chains(&backend, &[NONE, 5]).expect_err("outside");
            assert!(e.to_string().contains("chain node 1 links to 5"), "{e}");
            let e = rank_chains(&backend, &[NONE, 1]).expect_err("itself");
            assert!(e.to_string().contains("itself"), "{e}");
        }
    }

    #[test]
    fn random_forests_agree_across_devices() {
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        // Random forests: each node links to an earlier one or heads.
        let pred: Vec<u32> = (0..50_000u32)
            .map(|i| {
                if i == 0 || rng.random_bool(0.1) {
                    NONE
                } else {
                    rng.random_range(0..i)
                }
            })
            .collect();
        let want = oracle(&pred);
        assert_eq!(rank_chains(&Backend::Cpu, &pred).expect("cpu"), want);
        if let Some(g) = gpu() {
            assert_eq!(rank_chains(&Backend::Gpu(g), &pred).expect("gpu"), want);
        }
    }
}
