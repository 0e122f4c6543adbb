//! Account-model taint (Ethereum), as DESIGN.md and docs/kernels.md define it. Nodes are
//! addresses; edges are transfers in chain order (block, transaction position, ordinal),
//! and an edge's rank in that order is its time. Taint follows only time-respecting paths:
//! a transfer carries taint only if its sender held tainted funds before it.
//!
//! - **poison** (`poison.wgsl`): the earliest tainted arrival of every address, by Jacobi
//!   relaxation of arrival times (a min over in-edges; no atomics, so GPU and CPU agree
//!   exactly). After H steps: over paths of at most H transfers. The CPU walks the
//!   transfers once in chain order instead, which gives the same arrivals and hops
//!   (`poison_jacobi_cpu` is the step-by-step twin, tested equal).
//! - **haircut pool** (`pool.wgsl`): every address is a pool; each outgoing transfer carries
//!   the pool's tainted share at that moment. One thread per address walks its own
//!   transfers in order (parallel across addresses, sequential within one); Jacobi steps
//!   over the edges' tainted amounts reach the sequential pass's answer at the fixpoint,
//!   and the taint along paths of at most H transfers after H steps.
//!
//! Backward runs the same kernels on the reversed graph: every transfer turned around and
//! time run backwards (where did the seeds' funds come from).
//!
//! The pool's arithmetic (`frac.rs`) is integer only: exact 256-bit balances and shares
//! with a 32-bit mantissa and exponent, so both paths compute the same bits and an
//! emptied pool keeps no residue.
//!
//! Memory on the GPU: one binding per array, so at most `max_storage_buffer_binding_size /
//! 4` transfers or addresses for poison (33.5 M on lavapipe) and `/ 32` transfers for the
//! pool (its exact amounts); beyond that `--device auto` runs on the CPU.

mod cpu;
pub mod deposit;
pub mod deposit_resume;
pub mod frac;
pub mod job;
mod records;
pub mod resume;
pub mod stored;
pub mod stored_deposit;

use wgpu::util::DeviceExt;

use crate::device::{
    Backend, Gpu, RunScopes, bind, changed_flag, compile, dispatch_dims, read_back,
};
use crate::{Error, Result};

/// The hop or arrival of an address taint did not reach.
pub const UNREACHED: u32 = u32::MAX;
/// Event flag: an outgoing transfer (else incoming).
pub const OUT: u32 = 0x8000_0000;
/// Node flags.
pub const SEED: u32 = 1;
pub const STOP: u32 = 2;

/// Transfers between addresses, in chain order (edge `e` happens at time `e + 1`).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TransferGraph {
    /// Addresses are `0..nodes`.
    pub nodes: u32,
    pub src: Vec<u32>,
    pub dst: Vec<u32>,
    /// Amounts as f32, in the units the caller chose (the job scales them into f32's
    /// range): what poison compares with its minimum.
    pub amount: Vec<f32>,
    /// Exact amounts in the asset's base unit, for the haircut pool; empty: `amount`
    /// rounded to whole units.
    pub units: Vec<frac::U256>,
}

impl TransferGraph {
    /// Checks ids and amounts, so neither path reads out of bounds.
    pub fn validate(&self) -> Result<()> {
        let m = self.src.len();
        if self.dst.len() != m || self.amount.len() != m {
            return Err(Error::BadGraph(format!(
                "{m} sources, {} destinations, {} amounts",
                self.dst.len(),
                self.amount.len()
            )));
        }
        if m >= OUT as usize || self.nodes == UNREACHED {
            return Err(Error::TooLarge(format!(
                "{m} transfers, {} addresses: ids are 31 bits",
                self.nodes
            )));
        }
        if let Some(e) = (0..m).find(|&e| self.src[e] >= self.nodes || self.dst[e] >= self.nodes) {
            return Err(Error::BadGraph(format!(
                "transfer {e} joins {} and {} outside 0..{}",
                self.src[e], self.dst[e], self.nodes
            )));
        }
        if !self.units.is_empty() && self.units.len() != m {
            return Err(Error::BadGraph(format!(
                "{m} transfers, {} exact amounts",
                self.units.len()
            )));
        }
        if let Some(e) = self.amount.iter().position(|a| !a.is_finite() || *a < 0.0) {
            return Err(Error::BadGraph(format!(
                "transfer {e} has amount {}",
                self.amount[e]
            )));
        }
        Ok(())
    }

    /// Every transfer turned around, in reverse order: edge `e` here is edge `m − 1 − e`
    /// of `self`.
    pub fn reversed(&self) -> Self {
        Self {
            nodes: self.nodes,
            src: self.dst.iter().rev().copied().collect(),
            dst: self.src.iter().rev().copied().collect(),
            amount: self.amount.iter().rev().copied().collect(),
            units: self.units.iter().rev().copied().collect(),
        }
    }

    /// The exact amounts the pool runs on.
    pub fn pool_units(&self) -> std::borrow::Cow<'_, [frac::U256]> {
        if self.units.is_empty() {
            std::borrow::Cow::Owned(
                self.amount
                    .iter()
                    .map(|&a| frac::from_u128(a.round() as u128))
                    .collect(),
            )
        } else {
            std::borrow::Cow::Borrowed(&self.units)
        }
    }

    /// In-edges grouped by destination: (row_ptr, edge ids).
    fn in_csr(&self) -> (Vec<u32>, Vec<u32>) {
        let n = self.nodes as usize;
        let mut ptr = vec![0u32; n + 1];
        for &d in &self.dst {
            ptr[d as usize + 1] += 1;
        }
        for i in 0..n {
            ptr[i + 1] += ptr[i];
        }
        let mut fill = ptr.clone();
        let mut edges = vec![0u32; self.dst.len()];
        for (e, &d) in self.dst.iter().enumerate() {
            edges[fill[d as usize] as usize] = e as u32;
            fill[d as usize] += 1;
        }
        (ptr, edges)
    }

    /// Each address's transfers in chain order: (ptr, events), an event being the edge id
    /// with [`OUT`] set for outgoing ones. A self-transfer is a departure, then an arrival.
    fn events(&self) -> (Vec<u32>, Vec<u32>) {
        let n = self.nodes as usize;
        let mut ptr = vec![0u32; n + 1];
        for e in 0..self.src.len() {
            ptr[self.dst[e] as usize + 1] += 1;
            ptr[self.src[e] as usize + 1] += 1;
        }
        for i in 0..n {
            ptr[i + 1] += ptr[i];
        }
        let mut fill = ptr.clone();
        let mut ev = vec![0u32; ptr[n] as usize];
        for e in 0..self.src.len() {
            let (s, d) = (self.src[e] as usize, self.dst[e] as usize);
            ev[fill[s] as usize] = e as u32 | OUT;
            fill[s] += 1;
            ev[fill[d] as usize] = e as u32;
            fill[d] += 1;
        }
        (ptr, ev)
    }
}

/// Limits of a run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Options {
    /// Only paths of at most H transfers (exactly H steps); `None` runs to the fixpoint.
    pub max_hops: Option<u32>,
    /// A transfer carries taint only when (poison) its amount, (pool) its tainted amount
    /// reaches this.
    pub min_value: f32,
}

/// Node flags from seed and stop lists: seeds are never stops.
pub fn flags(nodes: u32, seeds: &[u32], stops: &[u32]) -> Result<Vec<u32>> {
    let mut f = vec![0u32; nodes as usize];
    for &s in stops {
        *f.get_mut(s as usize)
            .ok_or_else(|| Error::BadGraph(format!("stop {s} outside 0..{nodes}")))? |= STOP;
    }
    for &s in seeds {
        *f.get_mut(s as usize)
            .ok_or_else(|| Error::BadGraph(format!("seed {s} outside 0..{nodes}")))? = SEED;
    }
    Ok(f)
}

/// Poison results.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Arrivals {
    /// Per address: 0 for seeds, `e + 1` for the earliest tainted transfer `e` into it, or
    /// [`UNREACHED`].
    pub arrival: Vec<u32>,
    /// Per address: the fewest transfers from a seed (0 for seeds), or [`UNREACHED`].
    pub hop: Vec<u32>,
    pub steps: u32,
}

/// Limits of a pool run.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PoolOptions {
    /// Only paths of at most H transfers (exactly H steps); `None` runs to the fixpoint.
    pub max_hops: Option<u32>,
    /// A transfer carries taint only when its tainted amount (exact amount × share)
    /// reaches this, in the asset's base unit; zero: any positive share.
    pub min_value: frac::Frac,
}

/// Pool results.
#[derive(Clone, Debug, PartialEq)]
pub struct PoolShares {
    /// Per transfer: the tainted share of its amount it carried (0 to 1).
    pub share: Vec<frac::Frac>,
    /// Per address: the first step a transfer into it carried taint — the fewest transfers
    /// from a seed along which taint arrived (0 for seeds) — or [`UNREACHED`].
    pub hop: Vec<u32>,
    pub steps: u32,
}

impl PoolShares {
    /// Per transfer: the tainted amount it carried (exact amount × share), in base units.
    pub fn tainted(&self, g: &TransferGraph) -> Vec<f64> {
        let units = g.pool_units();
        self.share
            .iter()
            .zip(units.iter())
            .map(|(s, u)| {
                if *s == frac::ONE {
                    frac::to_f64(u)
                } else {
                    frac::to_f64(u) * s.to_f64()
                }
            })
            .collect()
    }
}

fn step_limit(g: &TransferGraph, opts: &Options) -> u32 {
    step_limit_of(g.src.len(), opts.max_hops)
}

fn step_limit_of(transfers: usize, max_hops: Option<u32>) -> u32 {
    max_hops.unwrap_or_else(|| {
        u32::try_from(transfers)
            .unwrap_or(u32::MAX - 1)
            .saturating_add(1)
    })
}

fn start_hops(flags: &[u32]) -> Vec<u32> {
    flags
        .iter()
        .map(|&f| if f & SEED != 0 { 0 } else { UNREACHED })
        .collect()
}

/// Time-respecting poison on `backend`. `flags` from [`flags`].
pub fn poison(
    backend: &Backend,
    g: &TransferGraph,
    flags: &[u32],
    opts: &Options,
) -> Result<Arrivals> {
    g.validate()?;
    check_flags(g, flags)?;
    match backend {
        Backend::Cpu => Ok(cpu::poison(g, flags, opts)),
        Backend::Gpu(gpu) => crate::device::gpu_or_cpu(
            gpu,
            || poison_gpu(gpu, g, flags, opts),
            || cpu::poison(g, flags, opts),
        ),
    }
}

/// The haircut pool on `backend`. `flags` from [`flags`].
pub fn pool(
    backend: &Backend,
    g: &TransferGraph,
    flags: &[u32],
    opts: &PoolOptions,
) -> Result<PoolShares> {
    g.validate()?;
    check_flags(g, flags)?;
    match backend {
        Backend::Cpu => Ok(cpu::pool(g, flags, opts)),
        Backend::Gpu(gpu) => crate::device::gpu_or_cpu(
            gpu,
            || pool_gpu(gpu, g, flags, opts),
            || cpu::pool(g, flags, opts),
        ),
    }
}

/// The CPU paths (also the GPU's test oracles).
pub use cpu::{poison as poison_cpu, poison_jacobi as poison_jacobi_cpu, pool as pool_cpu};

fn check_flags(g: &TransferGraph, flags: &[u32]) -> Result<()> {
    if flags.len() != g.nodes as usize {
        return Err(Error::BadGraph(format!(
            "{} flags for {} addresses",
            flags.len(),
            g.nodes
        )));
    }
    Ok(())
}

struct Buffers<'a> {
    gpu: &'a Gpu,
}

impl Buffers<'_> {
    /// A storage buffer from `data` (padded to one element: empty arrays cannot be bound),
    /// refused when beyond one binding.
    fn storage(
        &self,
        label: &'static str,
        data: &[u32],
        extra: wgpu::BufferUsages,
    ) -> Result<wgpu::Buffer> {
        let max = self.gpu.max_binding_bytes();
        if data.len() as u64 * 4 > max {
            return Err(Error::TooLarge(format!(
                "{label}: {} bytes in one binding; the adapter allows {max}",
                data.len() * 4
            )));
        }
        let one = [0u32];
        let contents: &[u32] = if data.is_empty() { &one } else { data };
        Ok(self
            .gpu
            .device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: bytemuck::cast_slice(contents),
                usage: wgpu::BufferUsages::STORAGE | extra,
            }))
    }
}

/// Compiles a double-buffered Jacobi kernel and runs it: bindings are the params, the
/// read-only `inputs`, the state pair (`state[k % 2]` read, the other written, at step
/// k), `hop` and a changed flag. Runs up to `limit` steps, stopping when a step changes
/// nothing; returns the steps run and the index of the state buffer holding the result.
#[allow(clippy::too_many_arguments)]
fn jacobi_gpu(
    gpu: &Gpu,
    label: &'static str,
    source: &str,
    inputs: &[&wgpu::Buffer],
    state: &[wgpu::Buffer; 2],
    hop: &wgpu::Buffer,
    nodes: u32,
    limit: u32,
    extra: [u32; 2],
) -> Result<(u32, usize)> {
    let read_only: Vec<bool> = inputs
        .iter()
        .map(|_| true)
        .chain([true, false, false, false])
        .collect();
    let mut c = compile(gpu, label, source, &read_only, &["step"])?;
    let pipeline = c.pipelines.pop().ok_or_else(|| Error::Gpu {
        what: "pipeline",
        reason: "no entry point".into(),
    })?;
    let params = params_buffer(gpu);
    let changed = Buffers { gpu }.storage(
        "changed",
        &[0],
        wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST,
    )?;
    let bind_from = |from: usize| {
        let mut buffers: Vec<&wgpu::Buffer> = vec![&params];
        buffers.extend_from_slice(inputs);
        buffers.extend([&state[from], &state[1 - from], hop, &changed]);
        bind(gpu, &c.layout, &buffers)
    };
    let binds = [bind_from(0), bind_from(1)];
    let mut current = 0usize;
    let mut steps = 0;
    let bar = crate::progress::bar(None, label);
    for k in 1..=limit {
        bar.inc(1);
        gpu.queue
            .write_buffer(&changed, 0, bytemuck::cast_slice(&[0u32]));
        let p: [u32; 4] = [nodes, k, extra[0], extra[1]];
        gpu.queue.write_buffer(&params, 0, bytemuck::cast_slice(&p));
        let mut enc = gpu.device.create_command_encoder(&Default::default());
        {
            let mut pass = enc.begin_compute_pass(&Default::default());
            pass.set_pipeline(&pipeline);
            pass.set_bind_group(0, &binds[current], &[]);
            let (x, y) = dispatch_dims(nodes, gpu);
            pass.dispatch_workgroups(x, y, 1);
        }
        gpu.queue.submit([enc.finish()]);
        current = 1 - current;
        steps = k;
        if !changed_flag(gpu, &changed, label)? {
            break;
        }
    }
    bar.finish_and_clear();
    Ok((steps, current))
}

fn params_buffer(gpu: &Gpu) -> wgpu::Buffer {
    gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("params"),
        size: 16,
        usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

fn poison_gpu(gpu: &Gpu, g: &TransferGraph, flags: &[u32], opts: &Options) -> Result<Arrivals> {
    let n = g.nodes;
    let mut hop = start_hops(flags);
    let arrival: Vec<u32> = hop
        .iter()
        .map(|&h| if h == 0 { 0 } else { UNREACHED })
        .collect();
    if n == 0 {
        return Ok(Arrivals {
            arrival,
            hop,
            steps: 0,
        });
    }
    let scopes = RunScopes::push(gpu);
    let b = Buffers { gpu };
    let none = wgpu::BufferUsages::empty();
    let copy = wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let (ptr, edges) = g.in_csr();
    let src: Vec<u32> = edges.iter().map(|&e| g.src[e as usize]).collect();
    let time: Vec<u32> = edges.iter().map(|&e| e + 1).collect();
    let amount: Vec<u32> = edges
        .iter()
        .map(|&e| g.amount[e as usize].to_bits())
        .collect();
    let ptr = b.storage("row_ptr", &ptr, none)?;
    let src = b.storage("src", &src, none)?;
    let time = b.storage("time", &time, none)?;
    let amount = b.storage("amount", &amount, none)?;
    let flags_buf = b.storage("flags", flags, none)?;
    let arr = [
        b.storage("arr0", &arrival, copy)?,
        b.storage("arr1", &arrival, copy)?,
    ];
    let hop_buf = b.storage("hop", &hop, copy)?;
    let (steps, current) = jacobi_gpu(
        gpu,
        "poison.wgsl",
        include_str!("poison.wgsl"),
        &[&ptr, &src, &time, &amount, &flags_buf],
        &arr,
        &hop_buf,
        n,
        step_limit(g, opts),
        [opts.min_value.to_bits(), 0],
    )?;
    let arrival = read_back(gpu, &arr[current], n as usize)?;
    hop = read_back(gpu, &hop_buf, n as usize)?;
    scopes.check()?;
    Ok(Arrivals {
        arrival,
        hop,
        steps,
    })
}

fn pool_gpu(gpu: &Gpu, g: &TransferGraph, flags: &[u32], opts: &PoolOptions) -> Result<PoolShares> {
    let n = g.nodes;
    let m = g.src.len();
    let mut hop = start_hops(flags);
    if n == 0 || m == 0 {
        return Ok(PoolShares {
            share: vec![frac::ZERO; m],
            hop,
            steps: 0,
        });
    }
    let scopes = RunScopes::push(gpu);
    let b = Buffers { gpu };
    let none = wgpu::BufferUsages::empty();
    let copy = wgpu::BufferUsages::COPY_SRC | wgpu::BufferUsages::COPY_DST;
    let (ptr, ev) = g.events();
    let units: Vec<u32> = g.pool_units().iter().flatten().copied().collect();
    let ptr = b.storage("ev_ptr", &ptr, none)?;
    let ev = b.storage("ev", &ev, none)?;
    let amount = b.storage("amount", &units, none)?;
    let dst = b.storage("dst", &g.dst, none)?;
    let flags_buf = b.storage("flags", flags, none)?;
    let zeros = vec![0u32; 2 * m];
    let x = [
        b.storage("x0", &zeros, copy)?,
        b.storage("x1", &zeros, copy)?,
    ];
    let hop_buf = b.storage("hop", &hop, copy)?;
    let (steps, current) = jacobi_gpu(
        gpu,
        "pool.wgsl",
        include_str!("pool.wgsl"),
        &[&ptr, &ev, &amount, &dst, &flags_buf],
        &x,
        &hop_buf,
        n,
        step_limit_of(m, opts.max_hops),
        opts.min_value.to_words(),
    )?;
    let words = read_back(gpu, &x[current], 2 * m)?;
    let share: Vec<frac::Frac> = words
        .chunks_exact(2)
        .map(|w| frac::Frac::from_words([w[0], w[1]]))
        .collect();
    hop = read_back(gpu, &hop_buf, n as usize)?;
    scopes.check()?;
    if let Some(e) = (0..m).find(|&e| {
        let s = share[e];
        (s.m != 0 && s.m < 0x8000_0000) || frac::less(frac::ONE, s)
    }) {
        return Err(Error::Gpu {
            what: "pool",
            reason: format!("transfer {e} read back share {:?}", share[e]),
        });
    }
    Ok(PoolShares { share, hop, steps })
}

#[cfg(test)]
mod tests;
