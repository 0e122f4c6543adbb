//! Connected components over an undirected edge list: the clustering kernel. Labels are
//! the smallest node id of each component, on the GPU (`cc.wgsl`) and the CPU (`cpu.rs`)
//! alike.
//!
//! Memory: the node array is one storage binding (4 bytes a node, so up to the adapter's
//! `max_storage_buffer_binding_size / 4` nodes: 33.5 M on lavapipe); the edge list is cut
//! into chunks that each fit a binding and is resident on the device (8 bytes an edge).

pub mod cpu;

use wgpu::util::DeviceExt;

use crate::device::{
    Backend, Gpu, RunScopes, bind, changed_buffer, changed_flag, compile, dispatch_dims, read_back,
};
use crate::{Error, Result};

pub use crate::device::WORKGROUP_SIZE;

const SHADER: &str = include_str!("cc.wgsl");

/// Labels each node with the smallest id of its component.
pub fn connected_components(backend: &Backend, n: u32, edges: &[(u32, u32)]) -> Result<Vec<u32>> {
    check_edges(n, edges)?;
    match backend {
        Backend::Cpu => Ok(cpu::connected_components(n, edges)),
        Backend::Gpu(gpu) => crate::device::gpu_or_cpu(
            gpu,
            || Kernel::new(gpu, SHADER)?.run(gpu, n, edges, None),
            || cpu::connected_components(n, edges),
        ),
    }
}

fn check_edges(n: u32, edges: &[(u32, u32)]) -> Result<()> {
    match edges.iter().position(|&(u, v)| u >= n || v >= n) {
        Some(index) => {
            let (src, dst) = edges[index];
            Err(Error::BadEdge {
                index,
                src,
                dst,
                nodes: n,
            })
        }
        None => Ok(()),
    }
}

/// The compiled pipelines.
pub(crate) struct Kernel {
    layout: wgpu::BindGroupLayout,
    hook: wgpu::ComputePipeline,
    jump: wgpu::ComputePipeline,
}

impl Kernel {
    pub(crate) fn new(gpu: &Gpu, source: &str) -> Result<Self> {
        // Bindings in the WGSL's order: params, parent, src, dst, changed.
        let c = compile(
            gpu,
            "cc.wgsl",
            source,
            &[false, true, true, false],
            &["hook", "jump"],
        )?;
        let [hook, jump]: [wgpu::ComputePipeline; 2] =
            c.pipelines.try_into().map_err(|_| Error::Gpu {
                what: "pipeline",
                reason: "expected two entry points".into(),
            })?;
        Ok(Self {
            layout: c.layout,
            hook,
            jump,
        })
    }

    /// Runs to the fixpoint. `chunk_edges` overrides the edges per binding (tests force
    /// small chunks so the chunking path runs).
    pub(crate) fn run(
        &self,
        gpu: &Gpu,
        n: u32,
        edges: &[(u32, u32)],
        chunk_edges: Option<usize>,
    ) -> Result<Vec<u32>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let d = &gpu.device;
        let max_binding = gpu.max_binding_bytes();
        if u64::from(n) * 4 > max_binding {
            return Err(Error::TooLarge(format!(
                "{n} nodes need {} bytes in one binding; the adapter allows {max_binding}",
                u64::from(n) * 4
            )));
        }
        let per_chunk = chunk_edges
            .unwrap_or(usize::try_from(max_binding / 4).unwrap_or(usize::MAX))
            .max(1);
        let scopes = RunScopes::push(gpu);

        let identity: Vec<u32> = (0..n).collect();
        let parent = d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
            label: Some("parent"),
            contents: bytemuck::cast_slice(&identity),
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
        });
        drop(identity);
        let changed = changed_buffer(gpu);
        let params = |count: u32| {
            d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some("params"),
                contents: bytemuck::cast_slice(&[n, count, 0, 0]),
                usage: wgpu::BufferUsages::UNIFORM,
            })
        };
        let node_params = params(0);
        let mut chunks = Vec::new();
        for chunk in edges.chunks(per_chunk) {
            let (src, dst): (Vec<u32>, Vec<u32>) = chunk.iter().copied().unzip();
            let count = u32::try_from(chunk.len())
                .map_err(|_| Error::TooLarge("edge chunk beyond u32".into()))?;
            let buf = |label, data: &[u32]| {
                d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                    label: Some(label),
                    contents: bytemuck::cast_slice(data),
                    usage: wgpu::BufferUsages::STORAGE,
                })
            };
            let (src, dst, p) = (buf("src", &src), buf("dst", &dst), params(count));
            chunks.push((
                bind(gpu, &self.layout, &[&p, &parent, &src, &dst, &changed]),
                count,
                (src, dst, p),
            ));
        }
        // The jump pass binds the first chunk's edge buffers (unused) or tiny dummies.
        let dummy = d.create_buffer(&wgpu::BufferDescriptor {
            label: Some("dummy"),
            size: 4,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        let node_bind = bind(
            gpu,
            &self.layout,
            &[&node_params, &parent, &dummy, &dummy, &changed],
        );

        let mut rounds = 0u32;
        loop {
            rounds += 1;
            gpu.queue
                .write_buffer(&changed, 0, bytemuck::cast_slice(&[0u32]));
            let mut enc = d.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                for (bind, count, _) in &chunks {
                    pass.set_pipeline(&self.hook);
                    pass.set_bind_group(0, bind, &[]);
                    let (x, y) = dispatch_dims(*count, gpu);
                    pass.dispatch_workgroups(x, y, 1);
                }
                pass.set_pipeline(&self.jump);
                pass.set_bind_group(0, &node_bind, &[]);
                let (x, y) = dispatch_dims(n, gpu);
                pass.dispatch_workgroups(x, y, 1);
            }
            gpu.queue.submit([enc.finish()]);
            if !changed_flag(gpu, &changed, "cc")? {
                break;
            }
            if rounds > n.saturating_add(2) {
                return Err(Error::Gpu {
                    what: "cc",
                    reason: format!("no fixpoint after {rounds} rounds"),
                });
            }
        }
        let labels = read_back(gpu, &parent, n as usize)?;
        scopes.check()?;
        if let Some(i) = labels.iter().enumerate().position(|(i, &l)| l as usize > i) {
            return Err(Error::Gpu {
                what: "cc",
                reason: format!(
                    "node {i} labelled {}: labels never exceed the node id",
                    labels[i]
                ),
            });
        }
        tracing::debug!(
            rounds,
            nodes = n,
            edges = edges.len(),
            chunks = chunks.len(),
            "cc on gpu"
        );
        Ok(labels)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::testing::gpu;

    /// Independent oracle: BFS from each unvisited node in id order labels its component
    /// with that (smallest) id.
    fn oracle(n: u32, edges: &[(u32, u32)]) -> Vec<u32> {
        let mut adj = vec![Vec::new(); n as usize];
        for &(u, v) in edges {
            adj[u as usize].push(v);
            adj[v as usize].push(u);
        }
        let mut label = vec![u32::MAX; n as usize];
        for s in 0..n {
            if label[s as usize] != u32::MAX {
                continue;
            }
            label[s as usize] = s;
            let mut q = VecDeque::from([s]);
            while let Some(x) = q.pop_front() {
                for &y in &adj[x as usize] {
                    if label[y as usize] == u32::MAX {
                        label[y as usize] = s;
                        q.push_back(y);
                    }
                }
            }
        }
        label
    }

    fn random_graph(seed: u64, n: u32, m: usize) -> Vec<(u32, u32)> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..m)
            .map(|_| (rng.random_range(0..n), rng.random_range(0..n)))
            .collect()
    }

    type Case = (String, u32, Vec<(u32, u32)>);

    fn cases() -> Vec<Case> {
        let wg = WORKGROUP_SIZE;
        let mut c = vec![
            ("empty".to_string(), 0, vec![]),
            ("one node".into(), 1, vec![]),
            ("one self-loop".into(), 1, vec![(0, 0)]),
            ("no edges".into(), wg + 1, vec![]),
            (
                "star to the last node".into(),
                wg * 3,
                (0..wg * 3 - 1).map(|i| (wg * 3 - 1, i)).collect(),
            ),
            (
                "star from 0".into(),
                wg - 1,
                (1..wg - 1).map(|i| (0, i)).collect(),
            ),
            // A long chain listed from its far end: the worst case for hooking.
            (
                "long chain".into(),
                5000,
                (1..5000).rev().map(|i| (i, i - 1)).collect(),
            ),
            (
                "duplicates and self-loops".into(),
                64,
                (0..64)
                    .flat_map(|i| [(i, i), (i / 2, i), (i / 2, i)])
                    .collect(),
            ),
        ];
        for (i, (n, m)) in [
            (wg - 1, 100usize),
            (wg, 300),
            (wg + 1, 129),
            (10_000, 6_000),
            (100_000, 150_000),
        ]
        .into_iter()
        .enumerate()
        {
            c.push((
                format!("random n={n} m={m}"),
                n,
                random_graph(i as u64 + 1, n, m),
            ));
        }
        c
    }

    #[test]
    fn cpu_matches_the_oracle() {
        for (name, n, edges) in cases() {
            assert_eq!(
                cpu::connected_components(n, &edges),
                oracle(n, &edges),
                "{name}"
            );
        }
    }

    #[test]
    fn gpu_matches_the_oracle_with_and_without_chunking() {
        let Some(g) = gpu() else { return };
        let kernel = Kernel::new(&g, SHADER).expect("pipeline");
        for (name, n, edges) in cases() {
            let expect = oracle(n, &edges);
            for chunk in [None, Some(7), Some(1000)] {
                let got = kernel
                    .run(&g, n, &edges, chunk)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                assert_eq!(got, expect, "{name}, chunk {chunk:?}");
            }
        }
    }

    #[test]
    fn a_broken_kernel_is_caught() {
        let Some(g) = gpu() else { return };
        // Pointer jumping that gives up at once: hooks still link roots, but labels are
        // left as uncompressed parents.
        let broken = SHADER.replace("atomicMin(&parent[i], gp);", "break;");
        assert_ne!(broken, SHADER);
        let kernel = Kernel::new(&g, &broken).expect("pipeline");
        let n = 5000;
        let edges: Vec<(u32, u32)> = (1..n).rev().map(|i| (i, i - 1)).collect();
        let got = kernel.run(&g, n, &edges, None).expect("runs");
        assert_ne!(
            got,
            oracle(n, &edges),
            "the harness must see a broken kernel"
        );
    }

    #[test]
    fn bad_edges_are_refused() {
        let err = connected_components(&Backend::Cpu, 3, &[(0, 1), (2, 3)]).expect_err("bad edge");
        assert_eq!(err.to_string(), "edge 1 (2 -> 3) names a node outside 0..3");
    }
}
