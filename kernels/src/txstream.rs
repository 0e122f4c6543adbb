//! The committed Bitcoin transactions one at a time, with their inputs and outputs, read
//! from `btc.outputs` and `btc.inputs` a row group at a time (both are sorted by
//! `tx_index`). What the stream holds is one row group of each table, whatever the chain:
//! the out-of-core kernels use it where they need a transaction's whole shape (CoinJoin
//! detection, common-input links).

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use ferret_schemas::{Manifest, Warehouse};

use crate::taint::stored::RowGroups;
use crate::{Error, Result};

/// One input: the output it spends, when that output is indexed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxIn {
    pub spent_output: Option<u64>,
    /// The spent output's value (known when it is indexed).
    pub value: Option<i64>,
    /// The spent output's address id.
    pub address_id: Option<u64>,
    /// The height of the spent output's block (known when it is indexed).
    pub spent_height: Option<i64>,
}

/// One output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxOut {
    pub output_id: u64,
    pub value: i64,
    pub address_id: Option<u64>,
    /// `script_type` is `nulldata` (OP_RETURN).
    pub nulldata: bool,
}

/// A transaction's rows.
#[derive(Clone, Debug, Default)]
pub struct TxRows {
    pub tx_index: u64,
    pub height: i64,
    /// Read only when asked for.
    pub txid: Option<String>,
    pub inputs: Vec<TxIn>,
    pub outputs: Vec<TxOut>,
}

/// A cursor over one table's row groups, a row group held at a time.
struct Cursor {
    groups: RowGroups,
    next_group: usize,
    columns: Vec<&'static str>,
    batches: Vec<RecordBatch>,
    batch: usize,
    row: usize,
    table: &'static str,
}

impl Cursor {
    async fn open(
        wh: &Warehouse,
        m: &Manifest,
        table: &'static str,
        columns: Vec<&'static str>,
        from_tx: u64,
    ) -> Result<Self> {
        let mut groups = RowGroups::open(wh, m, table, &["tx_index"]).await?;
        // Chain order, whatever order the files were listed in; none wholly before from_tx.
        groups
            .groups
            .retain(|g| u64::try_from(g.2[0].1).unwrap_or(0) >= from_tx);
        groups.groups.sort_by_key(|g| g.2[0].0);
        Ok(Self {
            groups,
            next_group: 0,
            columns,
            batches: Vec::new(),
            batch: 0,
            row: 0,
            table,
        })
    }

    /// Makes the current row valid; false at the end.
    async fn fill(&mut self, wh: &Warehouse) -> Result<bool> {
        loop {
            while self.batch < self.batches.len() {
                if self.row < self.batches[self.batch].num_rows() {
                    return Ok(true);
                }
                self.batch += 1;
                self.row = 0;
            }
            if self.next_group >= self.groups.groups.len() {
                self.batches.clear();
                return Ok(false);
            }
            self.batches = self
                .groups
                .read(wh, &[self.next_group], &self.columns)
                .await?;
            self.next_group += 1;
            self.batch = 0;
            self.row = 0;
        }
    }

    fn wrong(&self, col: &str) -> Error {
        Error::BadGraph(format!(
            "btc.{}: column {col} is missing or has the wrong type",
            self.table
        ))
    }

    fn i64_at(&self, c: usize) -> Result<Option<i64>> {
        let b = &self.batches[self.batch];
        let a = b
            .column(c)
            .as_primitive_opt::<Int64Type>()
            .ok_or_else(|| self.wrong(self.columns[c]))?;
        Ok((!a.is_null(self.row)).then(|| a.value(self.row)))
    }

    fn str_at(&self, c: usize) -> Result<Option<&str>> {
        let b = &self.batches[self.batch];
        let a = b
            .column(c)
            .as_string_opt::<i32>()
            .ok_or_else(|| self.wrong(self.columns[c]))?;
        Ok((!a.is_null(self.row)).then(|| a.value(self.row)))
    }

    fn id_at(&self, c: usize) -> Result<Option<u64>> {
        match self.i64_at(c)? {
            None => Ok(None),
            Some(v) => u64::try_from(v).map(Some).map_err(|_| {
                Error::BadGraph(format!(
                    "btc.{}: negative {} {v}",
                    self.table, self.columns[c]
                ))
            }),
        }
    }

    /// The current row's tx_index (column 0).
    fn tx(&self) -> Result<u64> {
        self.id_at(0)?
            .ok_or_else(|| Error::BadGraph(format!("btc.{}: a null tx_index", self.table)))
    }
}

/// The row groups both tables have (for a progress bar).
pub fn row_groups(outputs: &RowGroups) -> u64 {
    outputs.groups.len() as u64
}

/// Calls `f` on every committed transaction in chain order. `txids` asks for the txid
/// column too. A transaction must have outputs; inputs without their transaction's
/// outputs, or rows out of order, are errors naming the table.
pub async fn for_each_tx(
    wh: &Warehouse,
    m: &Manifest,
    txids: bool,
    what: &'static str,
    f: impl FnMut(&TxRows) -> Result<()>,
) -> Result<u64> {
    for_each_tx_from(wh, m, 0, txids, what, f).await
}

/// [`for_each_tx`] from transaction `from_tx` on (only the row groups holding those are
/// read).
pub async fn for_each_tx_from(
    wh: &Warehouse,
    m: &Manifest,
    from_tx: u64,
    txids: bool,
    what: &'static str,
    mut f: impl FnMut(&TxRows) -> Result<()>,
) -> Result<u64> {
    let mut out_cols = vec![
        "tx_index",
        "output_id",
        "value",
        "address_id",
        "script_type",
        "height",
    ];
    if txids {
        out_cols.push("txid");
    }
    let mut outs = Cursor::open(wh, m, "outputs", out_cols, from_tx).await?;
    let mut ins = Cursor::open(
        wh,
        m,
        "inputs",
        vec![
            "tx_index",
            "spent_output_id",
            "value",
            "address_id",
            "spent_height",
        ],
        from_tx,
    )
    .await?;
    // Rows before from_tx in the first row groups.
    while outs.fill(wh).await? && outs.tx()? < from_tx {
        outs.row += 1;
    }
    while ins.fill(wh).await? && ins.tx()? < from_tx {
        ins.row += 1;
    }
    let bar = crate::progress::bar(Some(row_groups(&outs.groups)), what);
    let mut tx = TxRows::default();
    let mut count = 0u64;
    let mut last: Option<u64> = None;
    while outs.fill(wh).await? {
        let t = outs.tx()?;
        if last.is_some_and(|l| t <= l) {
            return Err(Error::BadGraph(format!(
                "btc.outputs: transaction {t} out of order (after {})",
                last.unwrap_or(0)
            )));
        }
        tx.tx_index = t;
        tx.height = outs.i64_at(5)?.unwrap_or(0);
        // The txid's buffer is reused from one transaction to the next.
        match if txids { outs.str_at(6)? } else { None } {
            Some(id) => {
                let b = tx.txid.get_or_insert_with(String::new);
                b.clear();
                b.push_str(id);
            }
            None => tx.txid = None,
        }
        tx.outputs.clear();
        tx.inputs.clear();
        let group_before = outs.next_group;
        loop {
            let value = outs.i64_at(2)?.unwrap_or(0);
            tx.outputs.push(TxOut {
                output_id: outs
                    .id_at(1)?
                    .ok_or_else(|| Error::BadGraph("btc.outputs: a null output_id".into()))?,
                value,
                address_id: outs.id_at(3)?,
                nulldata: outs.str_at(4)? == Some("nulldata"),
            });
            outs.row += 1;
            if !outs.fill(wh).await? || outs.tx()? != t {
                break;
            }
        }
        if outs.next_group != group_before {
            bar.inc((outs.next_group - group_before) as u64);
        }
        while ins.fill(wh).await? {
            let it = ins.tx()?;
            if it < t {
                return Err(Error::BadGraph(format!(
                    "btc.inputs: inputs of transaction {it}, which has no outputs or is out of order"
                )));
            }
            if it > t {
                break;
            }
            let spent_output = ins.id_at(1)?;
            tx.inputs.push(TxIn {
                spent_output,
                value: ins.i64_at(2)?,
                address_id: ins.id_at(3)?,
                spent_height: ins.i64_at(4)?,
            });
            ins.row += 1;
        }
        last = Some(t);
        count += 1;
        f(&tx)?;
    }
    if ins.fill(wh).await? {
        return Err(Error::BadGraph(format!(
            "btc.inputs: inputs of transaction {}, which has no outputs",
            ins.tx()?
        )));
    }
    bar.finish_and_clear();
    Ok(count)
}
