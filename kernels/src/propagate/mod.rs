//! Weighted taint propagation, the engine under every UTXO taint policy: repeated Jacobi
//! steps over a CSR of in-edges (`propagate.wgsl` on the GPU, `cpu.rs` on the CPU).
//!
//! For every node v, step k computes
//! `f_k(v) = min(1, Σ_{e into v} weight(e) · f_{k−1}(src(e)))`, where an edge whose
//! source carries `f · gate(e)` below the minimum tainted value contributes nothing, seed
//! nodes stay at 1, and a source of [`SEED_SOURCE`] is a constant 1. `hop(v)` is the first
//! step at which `f(v) > 0` (0 for seeds). With a hop limit H exactly H steps run, so only
//! paths of at most H edges contribute; without one, steps run until nothing changes
//! (spend graphs are acyclic, so that is at most the longest path plus one). Taint runs
//! without a hop limit take [`fixpoint_in_order`] instead: the same fractions in one pass
//! over graphs whose edges all run one way along the node ids.
//!
//! Poison is this with every weight 1 (values stay exactly 0 or 1); haircut and fifo
//! differ only in their nodes and weights (see `taint`).
//!
//! Memory on the GPU: three node arrays (two fractions, one hop; 12 bytes a node), each
//! one binding, so at most `max_storage_buffer_binding_size / 4` nodes (33.5 M on
//! lavapipe); the edges (12 bytes each) are cut into row ranges whose arrays each fit a
//! binding, all resident on the device. `docs/kernels.md` plans the full chain.

mod cpu;
mod order;

pub use order::{ChainOrder, fixpoint_in_order};
pub(crate) use order::{RowSum, against};

use wgpu::util::DeviceExt;

use crate::device::{
    Backend, Gpu, RunScopes, bind, changed_flag, compile, dispatch_dims, read_back,
};
use crate::{Error, Result};

/// A source id meaning "a seed output": a constant fraction of 1.
pub const SEED_SOURCE: u32 = u32::MAX;
/// The hop of a node no taint reached.
pub const UNREACHED: u32 = u32::MAX;

const SHADER: &str = include_str!("propagate.wgsl");

/// A propagation problem: in-edges grouped by destination node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Propagation {
    /// `nodes + 1` offsets into the edge arrays.
    pub row_ptr: Vec<u32>,
    /// The source node of each edge, or [`SEED_SOURCE`].
    pub src: Vec<u32>,
    /// The share of the destination's value each edge brings.
    pub weight: Vec<f32>,
    /// The value (sats) the edge moves, compared with the minimum tainted value.
    pub gate: Vec<f32>,
    /// Nodes tainted at hop 0.
    pub seeds: Vec<u32>,
}

impl Propagation {
    /// The number of nodes.
    pub fn nodes(&self) -> u32 {
        u32::try_from(self.row_ptr.len().saturating_sub(1)).unwrap_or(u32::MAX)
    }

    /// Checks the CSR's shape and ids, so neither path reads out of bounds.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: String| Err(Error::BadGraph(what));
        if self.row_ptr.is_empty() {
            return bad("row_ptr is empty (it holds nodes + 1 offsets)".into());
        }
        if self.row_ptr.len() > UNREACHED as usize {
            return Err(Error::TooLarge(format!(
                "{} nodes: ids are u32 below {UNREACHED}",
                self.row_ptr.len() - 1
            )));
        }
        let m = self.src.len();
        if self.weight.len() != m || self.gate.len() != m {
            return bad(format!(
                "{m} sources, {} weights and {} gates",
                self.weight.len(),
                self.gate.len()
            ));
        }
        if self.row_ptr[0] != 0 || *self.row_ptr.last().unwrap_or(&0) as usize != m {
            return bad(format!(
                "row_ptr runs {}..{} over {m} edges",
                self.row_ptr[0],
                self.row_ptr.last().unwrap_or(&0)
            ));
        }
        if let Some(v) = self.row_ptr.windows(2).position(|w| w[0] > w[1]) {
            return bad(format!("row_ptr decreases at node {v}"));
        }
        let n = self.nodes();
        if let Some(e) = self.src.iter().position(|&s| s != SEED_SOURCE && s >= n) {
            return bad(format!(
                "edge {e} comes from node {} outside 0..{n}",
                self.src[e]
            ));
        }
        if let Some(s) = self.seeds.iter().find(|&&s| s >= n) {
            return bad(format!("seed {s} outside 0..{n}"));
        }
        if let Some(e) = self
            .weight
            .iter()
            .chain(&self.gate)
            .position(|w| !w.is_finite() || *w < 0.0)
        {
            return bad(format!("weight or gate {e} is negative or not finite"));
        }
        Ok(())
    }
}

/// Limits of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Options {
    /// Keep hops ≤ H (exactly H steps); `None` runs to the fixpoint.
    pub max_hops: Option<u32>,
    /// An edge carries taint only when the source's tainted value `f · gate` reaches this.
    pub min_value: f32,
}

/// Per-node results.
#[derive(Clone, Debug, PartialEq)]
pub struct Propagated {
    /// The tainted fraction of each node, in `[0, 1]`.
    pub fraction: Vec<f32>,
    /// The hop at which taint first reached each node, or [`UNREACHED`].
    pub hop: Vec<u32>,
    /// Steps that ran.
    pub steps: u32,
}

impl Propagated {
    fn start(g: &Propagation) -> Self {
        let n = g.nodes() as usize;
        let mut fraction = vec![0.0f32; n];
        let mut hop = vec![UNREACHED; n];
        for &s in &g.seeds {
            fraction[s as usize] = 1.0;
            hop[s as usize] = 0;
        }
        Self {
            fraction,
            hop,
            steps: 0,
        }
    }
}

/// The step limit: H, or enough for any acyclic graph.
fn step_limit(g: &Propagation, opts: &Options) -> u32 {
    opts.max_hops.unwrap_or_else(|| g.nodes().saturating_add(1))
}

/// Runs the propagation on `backend`.
pub fn propagate(backend: &Backend, g: &Propagation, opts: &Options) -> Result<Propagated> {
    g.validate()?;
    match backend {
        Backend::Cpu => Ok(propagate_cpu(g, opts)),
        Backend::Gpu(gpu) => crate::device::gpu_or_cpu(
            gpu,
            || Kernel::new(gpu, SHADER)?.run(gpu, g, opts, None),
            || propagate_cpu(g, opts),
        ),
    }
}

/// The CPU path (also the GPU's test oracle).
pub fn propagate_cpu(g: &Propagation, opts: &Options) -> Propagated {
    if let Some(r) = cpu::unit_bfs(g, opts) {
        return r;
    }
    propagate_jacobi_cpu(g, opts)
}

/// The CPU path step by step, exactly as the shader runs (any weights).
pub fn propagate_jacobi_cpu(g: &Propagation, opts: &Options) -> Propagated {
    let mut r = Propagated::start(g);
    let mut next = r.fraction.clone();
    let bar = crate::progress::bar(opts.max_hops.map(u64::from), "taint steps (cpu)");
    for k in 1..=step_limit(g, opts) {
        bar.inc(1);
        let changed = cpu::step(g, k, opts.min_value, &r.fraction, &mut next, &mut r.hop);
        std::mem::swap(&mut r.fraction, &mut next);
        r.steps = k;
        if !changed {
            break;
        }
    }
    bar.finish_and_clear();
    r
}

/// The compiled pipeline.
pub(crate) struct Kernel {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
}

/// One row range with its edge buffers.
struct Chunk {
    row0: u32,
    rows: u32,
    params: wgpu::Buffer,
    /// Bind groups reading fraction buffer 0 (writing 1), and the reverse.
    binds: [wgpu::BindGroup; 2],
}

impl Kernel {
    pub(crate) fn new(gpu: &Gpu, source: &str) -> Result<Self> {
        // In the WGSL's order: params, row_ptr, src, weight, gate, f_old, f_new, hop, changed.
        let read_only = [true, true, true, true, true, false, false, false];
        let mut c = compile(gpu, "propagate.wgsl", source, &read_only, &["step"])?;
        let pipeline = c.pipelines.pop().ok_or_else(|| Error::Gpu {
            what: "pipeline",
            reason: "no entry point".into(),
        })?;
        Ok(Self {
            layout: c.layout,
            pipeline,
        })
    }

    /// Runs the steps. `chunk_edges` overrides the edges per row range (tests force small
    /// ranges so the chunking path runs).
    pub(crate) fn run(
        &self,
        gpu: &Gpu,
        g: &Propagation,
        opts: &Options,
        chunk_edges: Option<usize>,
    ) -> Result<Propagated> {
        let mut r = Propagated::start(g);
        let n = g.nodes();
        if n == 0 {
            return Ok(r);
        }
        let d = &gpu.device;
        let max_binding = gpu.max_binding_bytes();
        if (u64::from(n) + 1) * 4 > max_binding {
            return Err(Error::TooLarge(format!(
                "{n} nodes need {} bytes in one binding; the adapter allows {max_binding}",
                u64::from(n) * 4
            )));
        }
        let limit_edges = usize::try_from(max_binding / 4).unwrap_or(usize::MAX);
        let per_chunk = chunk_edges.unwrap_or(limit_edges).clamp(1, limit_edges);
        let scopes = RunScopes::push(gpu);

        let storage = |label, contents: &[u8], extra| {
            d.create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents,
                usage: wgpu::BufferUsages::STORAGE | extra,
            })
        };
        let copy = wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
        let fractions = [
            storage("f0", bytemuck::cast_slice(&r.fraction), copy),
            storage("f1", bytemuck::cast_slice(&r.fraction), copy),
        ];
        let hop = storage("hop", bytemuck::cast_slice(&r.hop), copy);
        let changed = storage("changed", &[0u8; 4], copy);

        let mut chunks = Vec::new();
        let mut row0 = 0usize;
        while row0 < n as usize {
            let base = g.row_ptr[row0] as usize;
            // As many rows as fit: at least one, whose edges must fit on their own.
            let mut end = row0 + 1;
            let first = g.row_ptr[end] as usize - base;
            if first > limit_edges {
                return Err(Error::TooLarge(format!(
                    "node {row0} has {first} in-edges; one binding holds {limit_edges}"
                )));
            }
            while end < n as usize
                && g.row_ptr[end + 1] as usize - base <= per_chunk
                && end + 2 - row0 <= limit_edges
            {
                end += 1;
            }
            let rows = u32::try_from(end - row0)
                .map_err(|_| Error::TooLarge("row range beyond u32".into()))?;
            let edge_range = base..g.row_ptr[end] as usize;
            let ptr: Vec<u32> = g.row_ptr[row0..=end]
                .iter()
                .map(|p| p - base as u32)
                .collect();
            // Empty arrays cannot be bound: pad to one element.
            let pad_u32 = |s: &[u32]| if s.is_empty() { vec![0u32] } else { s.to_vec() };
            let pad_f32 = |s: &[f32]| if s.is_empty() { vec![0f32] } else { s.to_vec() };
            let none = wgpu::BufferUsages::empty();
            let ptr = storage("row_ptr", bytemuck::cast_slice(&ptr), none);
            let src = storage(
                "src",
                bytemuck::cast_slice(&pad_u32(&g.src[edge_range.clone()])),
                none,
            );
            let weight = storage(
                "weight",
                bytemuck::cast_slice(&pad_f32(&g.weight[edge_range.clone()])),
                none,
            );
            let gate = storage(
                "gate",
                bytemuck::cast_slice(&pad_f32(&g.gate[edge_range])),
                none,
            );
            let params = d.create_buffer(&wgpu::BufferDescriptor {
                label: Some("params"),
                size: 16,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            let bind = |from: usize| {
                let buffers = [
                    &params,
                    &ptr,
                    &src,
                    &weight,
                    &gate,
                    &fractions[from],
                    &fractions[1 - from],
                    &hop,
                    &changed,
                ];
                bind(gpu, &self.layout, &buffers)
            };
            let binds = [bind(0), bind(1)];
            chunks.push(Chunk {
                row0: row0 as u32,
                rows,
                params,
                binds,
            });
            row0 = end;
        }

        let mut current = 0usize;
        let bar = crate::progress::bar(opts.max_hops.map(u64::from), "taint steps (gpu)");
        for k in 1..=step_limit(g, opts) {
            bar.inc(1);
            gpu.queue
                .write_buffer(&changed, 0, bytemuck::cast_slice(&[0u32]));
            for c in &chunks {
                let p: [u32; 4] = [c.row0, c.rows, k, opts.min_value.to_bits()];
                gpu.queue
                    .write_buffer(&c.params, 0, bytemuck::cast_slice(&p));
            }
            let mut enc = d.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(&self.pipeline);
                for c in &chunks {
                    pass.set_bind_group(0, &c.binds[current], &[]);
                    let (x, y) = dispatch_dims(c.rows, gpu);
                    pass.dispatch_workgroups(x, y, 1);
                }
            }
            gpu.queue.submit([enc.finish()]);
            current = 1 - current;
            r.steps = k;
            if !changed_flag(gpu, &changed, "propagate")? {
                break;
            }
        }
        bar.finish_and_clear();
        let bits = read_back(gpu, &fractions[current], n as usize)?;
        r.fraction = bits.into_iter().map(f32::from_bits).collect();
        r.hop = read_back(gpu, &hop, n as usize)?;
        scopes.check()?;
        if let Some(v) = r.fraction.iter().position(|f| !(0.0..=1.0).contains(f)) {
            return Err(Error::Gpu {
                what: "propagate",
                reason: format!("node {v} read back fraction {}", r.fraction[v]),
            });
        }
        tracing::debug!(
            steps = r.steps,
            nodes = n,
            edges = g.src.len(),
            chunks = chunks.len(),
            "propagate on gpu"
        );
        Ok(r)
    }
}

#[cfg(test)]
mod tests;
